//! The phones' side of the mock: one `GET /mock/pushes` stream of every push the mock accepts (JSON
//! lines), each stamped by the mock with the microsecond it was accepted.

use bytes::{Buf, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

/// A push as the mock reports it.
#[derive(Debug, serde::Deserialize)]
pub struct Push {
    /// The device token.
    pub token: String,
    /// The challenge id (both providers collapse on it).
    pub collapse_id: String,
    /// `alert` for a prompt, `background` for a withdrawal.
    pub push_type: String,
    /// When the mock accepted it.
    pub received_unix_us: u64,
}

/// Starts the subscription; pushes arrive on the returned channel until the mock goes away.
pub async fn subscribe(mock: &str) -> anyhow::Result<mpsc::UnboundedReceiver<Push>> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri: hyper::Uri = format!("{mock}/mock/pushes").parse()?;
    let response = client
        .get(uri)
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {mock}/mock/pushes: {e}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{mock}/mock/pushes answered {}",
        response.status()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = response.into_body();
        let mut buffer = BytesMut::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line = buffer.split_to(end + 1);
                if let Ok(push) = serde_json::from_slice::<Push>(line.chunk())
                    && tx.send(push).is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
