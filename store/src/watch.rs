//! Turns an etcd watch stream into a stream of [`WatchEvent`]s.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use etcd_client::{EventType, WatchResponse};
use futures::StreamExt;

use crate::error::from_etcd;
use crate::etcd::relative_key;
use crate::{Error, KeyValue, Result, WatchEvent, WatchStream};

/// One etcd watch being read.
pub(crate) struct WatchState {
    stream: etcd_client::WatchStream,
    /// The store's prefix with its trailing slash.
    root: Arc<str>,
    /// The watch's `after_revision`, reported in compaction errors.
    after_revision: i64,
    /// Converted items not yet handed out (one etcd response carries many events).
    pending: VecDeque<Result<WatchEvent>>,
    /// Set after the last item: the watch was canceled or failed.
    done: bool,
}

impl WatchState {
    pub(crate) fn new(
        stream: etcd_client::WatchStream,
        root: Arc<str>,
        after_revision: i64,
    ) -> Self {
        Self {
            stream,
            root,
            after_revision,
            pending: VecDeque::new(),
            done: false,
        }
    }

    /// The stream of events, starting with those of `first`, the response that came
    /// with the watch's creation (or `None` if etcd closed the stream right away).
    pub(crate) fn into_stream(mut self, first: Option<WatchResponse>) -> WatchStream {
        match first {
            Some(response) => self.accept(response),
            None => self.fail(Error::WatchClosed),
        }
        futures::stream::unfold(self, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .boxed()
    }

    /// The next item, reading from etcd as needed; `None` once the watch has ended.
    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(response)) => self.accept(response),
                Ok(None) => self.fail(Error::WatchClosed),
                Err(err) => self.fail(from_etcd(err)),
            }
        }
    }

    /// Ends the watch with `err` as its last item.
    fn fail(&mut self, err: Error) {
        tracing::debug!(after_revision = self.after_revision, error = %err, "etcd watch ended");
        self.pending.push_back(Err(err));
        self.done = true;
    }

    /// Queues the items of one etcd watch response.
    fn accept(&mut self, response: WatchResponse) {
        if response.canceled() {
            let err = if response.compact_revision() > 0 {
                Error::Compacted {
                    requested: self.after_revision,
                    compact_revision: response.compact_revision(),
                }
            } else {
                Error::WatchCanceled {
                    reason: response.cancel_reason().to_owned(),
                }
            };
            self.fail(err);
            return;
        }
        if response.events().is_empty() {
            // The creation response's header revision is the store's revision, not the
            // watch's: older events may still be on their way. Only later empty responses
            // are progress notifications.
            if !response.created() {
                if let Some(header) = response.header() {
                    self.pending.push_back(Ok(WatchEvent::Progress {
                        revision: header.revision(),
                    }));
                }
            }
            return;
        }
        for event in response.events() {
            let item = self.convert(event);
            let failed = item.is_err();
            self.pending.push_back(item);
            if failed {
                self.done = true;
                return;
            }
        }
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<WatchEvent> {
        let kv = event
            .kv()
            .ok_or(Error::MalformedResponse("watch event without key"))?;
        let prev = event.prev_kv().map(|kv| self.key_value(kv)).transpose()?;
        Ok(match event.event_type() {
            EventType::Put => WatchEvent::Put {
                kv: self.key_value(kv)?,
                prev,
            },
            EventType::Delete => WatchEvent::Delete {
                key: relative_key(&self.root, kv.key())?,
                mod_revision: kv.mod_revision(),
                prev,
            },
        })
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        Ok(KeyValue {
            key: relative_key(&self.root, kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }
}
