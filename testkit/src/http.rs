//! HTTP exchanges an ordinary client cannot make reliably.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POSTs `body` to `http://127.0.0.1:{port}{path}` while reading the answer at the same
/// time. A server may answer a body that is too large (413) before reading it, and close;
/// a client that writes the whole body first then fails with a broken pipe, one run in a
/// few. Here the write may fail: the answer is what counts. Returns status and body.
pub async fn post_reading_early(
    port: u16,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        // An early answer closes the connection mid-body: that error is expected.
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                // A reset after the answer arrived still leaves the answer.
                Err(_) if !raw.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    writer.abort();
    read.map_err(|_| anyhow::anyhow!("no answer from 127.0.0.1:{port}{path} within 10 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no complete HTTP answer: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// GETs `url` and returns its JSON body (a test's read-back; any failure panics with it).
pub async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> serde_json::Value {
    let r = http.get(url).send().await.expect("GET");
    let status = r.status();
    r.json()
        .await
        .unwrap_or_else(|e| panic!("a {status} answer without a JSON body: {e}"))
}
