//! Routes: a topic, a decoder and a typed handler, erased behind one trait object.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use crate::{Context, Decoder, Event, HandlerError, RetryPolicy};

/// A typed handler: `async fn(Context, Event<T>) -> Result<(), HandlerError>`.
pub trait Handler<T>: Send + Sync + 'static {
    /// Handles one event.
    fn call(
        &self,
        ctx: Context,
        event: Event<T>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<T, F, Fut> Handler<T> for F
where
    T: Send + 'static,
    F: Fn(Context, Event<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn call(
        &self,
        ctx: Context,
        event: Event<T>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(ctx, event)
    }
}

/// Picks the dedupe key of a message; `None` falls back to the default.
pub type DedupeKeyFn = Arc<dyn Fn(&OwnedMessage) -> Option<String> + Send + Sync>;

/// Per-route settings.
#[derive(Clone)]
pub struct RouteOptions {
    /// Overrides the consumer's retry policy for this topic.
    pub retry: Option<RetryPolicy>,
    /// Run the handler inside the dedupe transaction (default: when a database is set).
    pub dedupe: bool,
    /// Custom dedupe key; the default is the `ce_id` header, else the original coordinates.
    pub dedupe_key: Option<DedupeKeyFn>,
    /// Up to this many waiting messages of a partition lane are handled in one dedupe
    /// transaction (default 1 = one transaction per message). Opt in only when the handler's
    /// effects are all inside that transaction: if any message of a batch fails, the batch is
    /// rolled back and its messages are handled again one by one.
    pub batch_size: usize,
}

impl Default for RouteOptions {
    fn default() -> Self {
        Self {
            retry: None,
            dedupe: true,
            dedupe_key: None,
            batch_size: 1,
        }
    }
}

impl std::fmt::Debug for RouteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteOptions")
            .field("retry", &self.retry)
            .field("dedupe", &self.dedupe)
            .field("dedupe_key", &self.dedupe_key.as_ref().map(|_| "custom"))
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

/// Why an attempt failed, as the `gregor-error-kind` header spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The handler said it may work later.
    Retryable,
    /// The handler said it never will.
    Permanent,
    /// The payload could not be decoded.
    Decode,
    /// The handler panicked (treated as retryable).
    Panic,
    /// A dependency cannot be reached — the decoder's schema registry, or the database (the
    /// dedupe transaction's or the handler's own SQL): the message waits in place, its
    /// partition paused behind it, never counted, forwarded or dead-lettered for this.
    Unavailable,
}

impl ErrorKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Decode => "decode",
            Self::Panic => "panic",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The result of one attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    Ok,
    Failed { kind: ErrorKind, message: String },
}

pub(crate) trait ErasedRoute: Send + Sync {
    fn run<'a>(
        &'a self,
        msg: &'a OwnedMessage,
        event: EventMeta,
        ctx: Context,
    ) -> BoxFuture<'a, Attempt>;
}

/// The parts of an [`Event`] the runtime knows before decoding.
#[derive(Debug)]
pub(crate) struct EventMeta {
    pub(crate) topic: String,
    pub(crate) attempt: u32,
}

pub(crate) struct TypedRoute<D, H> {
    pub(crate) decoder: D,
    pub(crate) handler: H,
}

impl<D, H> ErasedRoute for TypedRoute<D, H>
where
    D: Decoder,
    H: Handler<D::Value>,
{
    fn run<'a>(
        &'a self,
        msg: &'a OwnedMessage,
        meta: EventMeta,
        ctx: Context,
    ) -> BoxFuture<'a, Attempt> {
        let work = async move {
            let value = match msg.payload() {
                None => None,
                Some(bytes) => match self.decoder.decode(bytes).await {
                    Ok(v) => Some(v),
                    Err(e) => {
                        let kind = if e.is_retryable() {
                            ErrorKind::Unavailable
                        } else {
                            ErrorKind::Decode
                        };
                        return Attempt::Failed {
                            kind,
                            message: e.reason(),
                        };
                    }
                },
            };
            let event = Event {
                value,
                key: msg.key().map(<[u8]>::to_vec),
                topic: meta.topic,
                source_topic: msg.topic().to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp: msg.timestamp().to_millis(),
                attempt: meta.attempt,
                headers: msg.headers().cloned(),
            };
            match self.handler.call(ctx, event).await {
                Ok(()) => Attempt::Ok,
                Err(e) => Attempt::Failed {
                    kind: e.kind(),
                    message: e.to_string(),
                },
            }
        };
        Box::pin(AssertUnwindSafe(work).catch_unwind().map(|r| {
            r.unwrap_or_else(|panic| Attempt::Failed {
                kind: ErrorKind::Panic,
                message: format!("handler panicked: {}", panic_message(&*panic)),
            })
        }))
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A route as the runtime holds it.
pub(crate) struct RouteEntry {
    pub(crate) route: Box<dyn ErasedRoute>,
    pub(crate) policy: RetryPolicy,
    pub(crate) dedupe: bool,
    pub(crate) dedupe_key: Option<DedupeKeyFn>,
    pub(crate) batch_size: usize,
}
