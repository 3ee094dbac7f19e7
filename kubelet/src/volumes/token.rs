//! The kubelet's ServiceAccount token manager (upstream `pkg/kubelet/token`): tokens for
//! projected `serviceAccountToken` sources come from the apiserver's TokenRequest API,
//! bound to the pod, and are cached per (service account, pod, audience, expiry). A
//! token is requested again once 80% of its lifetime has passed or it is 24 hours old;
//! if that fails, the cached token is used until it expires.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use parking_lot::Mutex;

use super::Error;

/// Upstream's `maxTTL`: a token older than this is replaced whatever its expiry.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    service_account: String,
    pod_uid: String,
    audiences: Vec<String>,
    expiration_seconds: i64,
}

#[derive(Clone, Debug)]
struct Cached {
    token: String,
    expires: Timestamp,
    /// When it should be requested again.
    refresh: Timestamp,
}

/// What a token source of a pod asks for.
#[derive(Clone, Debug)]
pub struct TokenSpec<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
    /// Empty: the apiserver's API audiences.
    pub audience: &'a str,
    pub expiration_seconds: i64,
}

/// Requests and caches bound ServiceAccount tokens.
pub struct TokenManager {
    client: kube::Client,
    cache: Mutex<HashMap<Key, Cached>>,
}

/// When a token issued for `ttl` that expires at `expires` should be replaced: when 80%
/// of its lifetime has passed, or at most 24 hours after it was issued.
pub fn refresh_at(expires: Timestamp, ttl: Duration) -> Timestamp {
    let signed =
        |d: Duration| jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    let issued = expires.checked_sub(signed(ttl)).unwrap_or(expires);
    let by_ttl = expires.checked_sub(signed(ttl / 5)).unwrap_or(expires);
    let by_age = issued.checked_add(signed(MAX_TTL)).unwrap_or(expires);
    by_ttl.min(by_age)
}

/// A wall-clock time as an `Instant` for timers (now, when it has passed).
pub fn instant_of(at: Timestamp) -> Instant {
    let now = Timestamp::now();
    let ahead = at.duration_since(now);
    Instant::now() + Duration::try_from(ahead).unwrap_or(Duration::ZERO)
}

impl TokenManager {
    pub fn new(client: kube::Client) -> TokenManager {
        TokenManager {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A valid token for `spec` and when it should be requested again.
    pub async fn token(&self, spec: &TokenSpec<'_>) -> Result<(String, Timestamp), Error> {
        let key = Key {
            namespace: spec.namespace.to_owned(),
            service_account: spec.service_account.to_owned(),
            pod_uid: spec.pod_uid.to_owned(),
            audiences: if spec.audience.is_empty() {
                Vec::new()
            } else {
                vec![spec.audience.to_owned()]
            },
            expiration_seconds: spec.expiration_seconds,
        };
        let now = Timestamp::now();
        let cached = self.cache.lock().get(&key).cloned();
        if let Some(c) = &cached {
            if now < c.refresh {
                return Ok((c.token.clone(), c.refresh));
            }
        }
        match self.request(spec, &key).await {
            Ok(fresh) => {
                let out = (fresh.token.clone(), fresh.refresh);
                self.cache.lock().insert(key, fresh);
                Ok(out)
            }
            // The old token still works: keep it and try again soon.
            Err(e) if cached.as_ref().is_some_and(|c| now < c.expires) => {
                tracing::warn!(error = %e, service_account = spec.service_account, "refreshing service account token failed, using the cached one");
                let retry = now
                    .checked_add(jiff::SignedDuration::from_secs(10))
                    .unwrap_or(now);
                Ok((cached.map(|c| c.token).unwrap_or_default(), retry))
            }
            Err(e) => Err(e),
        }
    }

    async fn request(&self, spec: &TokenSpec<'_>, key: &Key) -> Result<Cached, Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), spec.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: key.audiences.clone(),
                expiration_seconds: Some(spec.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(spec.pod_name.to_owned()),
                    uid: Some(spec.pod_uid.to_owned()),
                }),
            },
            ..Default::default()
        };
        let answer = api
            .create_token_request(spec.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                // The apiserver's own message (`serviceaccounts "x" not found`) when it
                // answered.
                let why = match &e {
                    kube::Error::Api(status) => status.message.clone(),
                    other => other.to_string(),
                };
                format!(
                    "failed to fetch token for service account {}/{}: {why}",
                    spec.namespace, spec.service_account
                )
            })?;
        let Some(status) = answer.status.filter(|s| !s.token.is_empty()) else {
            return Err(format!(
                "failed to fetch token for service account {}/{}: the answer has no token",
                spec.namespace, spec.service_account
            ));
        };
        let expires = status.expiration_timestamp.0;
        let ttl = answer
            .spec
            .expiration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        Ok(Cached {
            token: status.token,
            expires,
            refresh: refresh_at(expires, ttl),
        })
    }

    /// Drops the tokens of a pod that is gone.
    pub fn forget_pod(&self, pod_uid: &str) {
        self.cache.lock().retain(|k, _| k.pod_uid != pod_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_eighty_percent_or_a_day() {
        let exp: Timestamp = "2026-12-02T03:00:00Z".parse().unwrap();
        // One hour: again after 48 minutes.
        assert_eq!(
            refresh_at(exp, Duration::from_secs(3600)),
            "2026-12-02T02:48:00Z".parse::<Timestamp>().unwrap()
        );
        // Ten minutes: after eight.
        assert_eq!(
            refresh_at(exp, Duration::from_secs(600)),
            "2026-12-02T02:58:00Z".parse::<Timestamp>().unwrap()
        );
        // A week: after a day.
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(
            refresh_at(exp, week),
            "2026-11-26T03:00:00Z".parse::<Timestamp>().unwrap()
        );
    }
}
