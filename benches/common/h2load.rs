//! Unary gRPC calls driven by h2load (Debian package `nghttp2-client`), so
//! a call's cost is measured beside a no-op call of the same server with the
//! same load generator, not with our own client in the way.

use std::{io::Write as _, process::Command};

use anyhow::{Context as _, bail};
use prost::Message;

/// What h2load measured for one method.
#[derive(Debug, Clone)]
pub struct Load {
    pub requests: u64,
    pub per_second: f64,
    /// Mean bytes of response data per request (headers and trailers apart):
    /// a refusal carries none, so this shows the calls answered in full.
    pub bytes_per_response: f64,
}

/// Whether h2load is installed (the bench skips its lines if not, and says so).
pub fn available() -> bool {
    Command::new("h2load").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Sends `requests` calls of `method` (`/package.Service/Method`) with
/// `message` from `callers` connections, one call in flight on each.
pub async fn unary(
    address: &str,
    method: &str,
    message: &impl Message,
    callers: usize,
    requests: usize,
) -> anyhow::Result<Load> {
    // A gRPC frame: uncompressed, length-prefixed.
    let body = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(&frame)?;
    let url = format!("{}{method}", address.trim_end_matches('/'));
    let path = file.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("h2load")
            .args(["-n", &requests.to_string(), "-c", &callers.to_string(), "-m", "1", "-t", "1"])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("-d")
            .arg(&path)
            .arg(&url)
            .output()
    })
    .await?
    .context("running h2load")?;
    drop(file);
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("h2load failed: {}\n{text}", String::from_utf8_lossy(&output.stderr));
    }
    parse(&text).with_context(|| format!("reading h2load's report:\n{text}"))
}

/// Reads `finished in …, N req/s`, the succeeded count and the data bytes.
fn parse(text: &str) -> Option<Load> {
    let per_second = text
        .lines()
        .find(|l| l.starts_with("finished in"))?
        .split(", ")
        .find_map(|part| part.strip_suffix(" req/s"))?
        .trim()
        .parse()
        .ok()?;
    let requests: u64 = text
        .lines()
        .find(|l| l.starts_with("requests:"))?
        .split(", ")
        .find_map(|part| part.strip_suffix(" succeeded"))?
        .trim()
        .parse()
        .ok()?;
    // traffic: 1.23MB (1289732) total, 20.00KB (20480) headers (space savings 93.1%), 1.17MB (1228800) data
    let data: f64 = text
        .lines()
        .find(|l| l.starts_with("traffic:"))?
        .split(", ")
        .find(|part| part.ends_with(" data"))?
        .split(['(', ')'])
        .nth(1)?
        .parse()
        .ok()?;
    Some(Load { requests, per_second, bytes_per_response: data / requests.max(1) as f64 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_an_h2load_report() {
        let report = "finished in 2.01s, 9950.12 req/s, 3.10MB/s\n\
            requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored, 0 timeout\n\
            status codes: 20000 2xx, 0 3xx, 0 4xx, 0 5xx\n\
            traffic: 6.23MB (6532180) total, 254.02KB (260112) headers (space savings 93.45%), 5.86MB (6140000) data\n";
        let load = super::parse(report).unwrap();
        assert_eq!(load.requests, 20000);
        assert!((load.per_second - 9950.12).abs() < 1e-6);
        assert!((load.bytes_per_response - 307.0).abs() < 1e-6);
    }
}
