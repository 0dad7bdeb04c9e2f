//! [`ByTopic`]: one codec per topic, for a consumer of topics of different formats.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Codec, DecodeError};
use crate::message::RawMessage;

type BoxDecode<'a, V> = Pin<Box<dyn Future<Output = Result<V, DecodeError>> + Send + 'a>>;

trait DynCodec<V>: Send + Sync {
    fn decode_boxed<'a>(&'a self, message: &'a RawMessage) -> BoxDecode<'a, V>;
}

impl<C: Codec> DynCodec<C::Value> for C {
    fn decode_boxed<'a>(&'a self, message: &'a RawMessage) -> BoxDecode<'a, C::Value> {
        Box::pin(self.decode(message))
    }
}

/// Selects the codec by topic, for a consumer subscribed to topics of
/// different formats (raw bytes on one, JSON on another, Avro on a third).
/// All codecs produce the same type: map them into an enum with [`CodecExt::map`].
///
/// A message from a topic with no codec and no default is a terminal `decode`
/// error (it goes to the DLQ), never a panic.
///
/// ```
/// use weir::codec::{ByTopic, CodecExt};
/// use weir::{JsonCodec, StringCodec};
///
/// #[derive(serde::Deserialize)]
/// struct Click { link: String }
/// enum Event { Click(Click), Note(String) }
///
/// let codec = ByTopic::new()
///     .topic("clicks", JsonCodec::<Click>::new().map(Event::Click))
///     .default(StringCodec.map(Event::Note));
/// # let _ = codec;
/// ```
pub struct ByTopic<V> {
    topics: HashMap<String, Arc<dyn DynCodec<V>>>,
    default: Option<Arc<dyn DynCodec<V>>>,
}

impl<V: Send + 'static> ByTopic<V> {
    /// No topics yet.
    pub fn new() -> Self {
        ByTopic {
            topics: HashMap::new(),
            default: None,
        }
    }

    /// Decodes messages of `topic` (retry and DLQ copies included: they keep
    /// the original topic in `weir-original-topic`) with `codec`.
    pub fn topic<C: Codec<Value = V>>(mut self, topic: impl Into<String>, codec: C) -> Self {
        self.topics.insert(topic.into(), Arc::new(codec));
        self
    }

    /// Decodes messages of every other topic with `codec`.
    pub fn default<C: Codec<Value = V>>(mut self, codec: C) -> Self {
        self.default = Some(Arc::new(codec));
        self
    }

    fn pick(&self, message: &RawMessage) -> Option<&Arc<dyn DynCodec<V>>> {
        if let Some(c) = self.topics.get(&*message.topic) {
            return Some(c);
        }
        // Retry-tier copies live on `<topic>.retry.<delay>`: use the source topic's codec.
        if let Some(orig) = crate::wire::original_topic(&message.headers)
            && let Some(c) = self.topics.get(orig)
        {
            return Some(c);
        }
        self.default.as_ref()
    }
}

impl<V: Send + 'static> Default for ByTopic<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> std::fmt::Debug for ByTopic<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut topics: Vec<&String> = self.topics.keys().collect();
        topics.sort();
        f.debug_struct("ByTopic")
            .field("topics", &topics)
            .field("default", &self.default.is_some())
            .finish()
    }
}

impl<V: Send + 'static> Codec for ByTopic<V> {
    type Value = V;

    async fn decode(&self, message: &RawMessage) -> Result<V, DecodeError> {
        match self.pick(message) {
            Some(c) => c.decode_boxed(message).await,
            None => Err(DecodeError::Other(format!(
                "no codec for topic `{}` (add it with ByTopic::topic or set a default)",
                message.topic
            ))),
        }
    }
}
