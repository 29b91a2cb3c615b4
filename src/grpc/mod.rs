//! The gRPC edge: the backend API (`backend.rs`) and the device API (`device.rs`), the protobuf
//! conversions, and the single mapping of errors to statuses. The only module that knows `pb` types.

pub mod backend;
pub mod codec;
pub mod convert;
pub mod device;
pub mod envelope;
pub mod signin;
pub mod status;
pub mod stream;

use futures::{Stream, StreamExt};
use std::pin::Pin;
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub use backend::BackendApi;
pub use device::DeviceApi;

/// A server stream as handlers return it.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Ends `stream` with UNAVAILABLE when the replica shuts down, so that long-lived streams do not hold the
/// drain open and clients know to reconnect to another replica.
pub fn until_shutdown<T: Send + 'static>(
    stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    shutdown: CancellationToken,
) -> EventStream<T> {
    let stream = Box::pin(stream);
    Box::pin(futures::stream::unfold(
        Some((stream, shutdown)),
        |state| async move {
            let (mut stream, shutdown) = state?;
            tokio::select! {
                biased;
                item = stream.next() => item.map(|item| (item, Some((stream, shutdown)))),
                () = shutdown.cancelled() => {
                    Some((Err(Status::unavailable("relay shutting down; reconnect and watch again")), None))
                }
            }
        },
    ))
}
