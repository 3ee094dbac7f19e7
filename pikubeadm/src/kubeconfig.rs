//! kubeconfig files with embedded credentials, as kubeadm's `kubeconfig` phase writes them
//! (`admin.conf`, `scheduler.conf`, ...): one cluster (the CA and the apiserver URL), one
//! user (client certificate and key), one context `<user>@<cluster>` made current.

use base64::Engine;
use serde_json::json;

/// Renders a kubeconfig. The output depends only on its inputs, so an unchanged
/// certificate gives a byte-identical file.
pub fn render(
    cluster_name: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    client_cert_pem: &str,
    client_key_pem: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let context = format!("{user}@{cluster_name}");
    let config = json!({
        "apiVersion": "v1",
        "clusters": [{
            "cluster": {
                "certificate-authority-data": b64(ca_pem),
                "server": server,
            },
            "name": cluster_name,
        }],
        "contexts": [{
            "context": { "cluster": cluster_name, "user": user },
            "name": context,
        }],
        "current-context": context,
        "kind": "Config",
        "preferences": {},
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": b64(client_cert_pem),
                "client-key-data": b64(client_key_pem),
            },
        }],
    });
    // A JSON value of strings, lists and maps always serializes.
    serde_yaml::to_string(&config).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_embedded_credentials() {
        let text = render(
            "pi",
            "https://10.0.0.1:6443",
            "CA",
            "kubernetes-admin",
            "CERT",
            "KEY",
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["current-context"], "kubernetes-admin@pi");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://10.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(v["contexts"][0]["context"]["user"], "kubernetes-admin");
    }
}
