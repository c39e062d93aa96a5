//! A small HTTP/1.1 client for the controller's API, over TCP or a Unix
//! socket (the harness's management network is the host filesystem: agents
//! live in host network namespaces and reach the controller through
//! `/run/strato/<prefix>/controller.sock`).

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use http_body_util::{BodyExt as _, Full};
use hyper::{body::Bytes, Request};
pub use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::{TcpStream, UnixStream};

/// Where the controller listens: `http://HOST:PORT` or `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Endpoint, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(
                    "unix: endpoint needs a socket path, e.g. unix:/run/strato/x/controller.sock"
                        .into(),
                );
            }
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        let rest = s.strip_prefix("http://").ok_or_else(|| {
            format!("endpoint {s:?} must look like http://HOST:PORT or unix:/path/to/socket")
        })?;
        let hostport = rest.trim_end_matches('/');
        if hostport.is_empty() || !hostport.contains(':') || hostport.contains('/') {
            return Err(format!("endpoint {s:?} must look like http://HOST:PORT"));
        }
        Ok(Endpoint::Tcp(hostport.to_owned()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the controller at {endpoint}: {source}")]
    Connect {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
    #[error("controller at {endpoint} did not answer within {timeout:?}")]
    Timeout {
        endpoint: Endpoint,
        timeout: Duration,
    },
    #[error("HTTP exchange with {endpoint} failed: {source}")]
    Http {
        endpoint: Endpoint,
        #[source]
        source: hyper::Error,
    },
    #[error("{method} {path} on {endpoint} answered {status}: {body}")]
    Status {
        endpoint: Endpoint,
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("invalid request: {reason}")]
    BadRequest { reason: String },
    #[error("{path}: response is not the expected JSON: {source}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One request/response exchange (a new connection each time: these are
/// control messages, seconds apart).
pub async fn request(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), ClientError> {
    let (status, _, bytes) = call(endpoint, method, path, &[], body, timeout).await?;
    Ok((status, bytes))
}

/// One exchange with extra request headers (e.g. `X-Auth-Token`); returns
/// the response headers too.
pub async fn call(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes), ClientError> {
    let fut = exchange(endpoint, method, path, headers, body);
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            endpoint: endpoint.clone(),
            timeout,
        }),
    }
}

async fn exchange(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes), ClientError> {
    let connect_err = |source| ClientError::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    let http_err = |source| ClientError::Http {
        endpoint: endpoint.clone(),
        source,
    };
    let host = match endpoint {
        Endpoint::Tcp(a) => a.clone(),
        Endpoint::Unix(_) => "localhost".to_owned(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::BadRequest {
            reason: e.to_string(),
        })?;
    let r = match endpoint {
        Endpoint::Tcp(addr) => {
            let stream = TcpStream::connect(addr).await.map_err(connect_err)?;
            send(stream, req).await.map_err(http_err)?
        }
        Endpoint::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(connect_err)?;
            send(stream, req).await.map_err(http_err)?
        }
    };
    Ok(r)
}

async fn send<S>(
    stream: S,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await?.to_bytes();
    drop(sender);
    let _ = conn.await;
    Ok((status, headers, bytes))
}

/// Opens a streaming GET (the configuration watch); the caller reads the
/// body frame by frame. Non-2xx is an error carrying the body.
pub async fn stream(
    endpoint: &Endpoint,
    path: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
    let connect_err = |source| ClientError::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    let http_err = |source| ClientError::Http {
        endpoint: endpoint.clone(),
        source,
    };
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("static request parts are valid");
    let (mut sender, conn) = match endpoint {
        Endpoint::Tcp(addr) => {
            let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
                .map_err(|_| ClientError::Timeout {
                    endpoint: endpoint.clone(),
                    timeout: Duration::from_secs(5),
                })?
                .map_err(connect_err)?;
            let (tx, c) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .map_err(http_err)?;
            (
                tx,
                tokio::spawn(async move {
                    let _ = c.await;
                }),
            )
        }
        Endpoint::Unix(p) => {
            let s = UnixStream::connect(p).await.map_err(connect_err)?;
            let (tx, c) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .map_err(http_err)?;
            (
                tx,
                tokio::spawn(async move {
                    let _ = c.await;
                }),
            )
        }
    };
    drop(conn);
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .map_err(|_| ClientError::Timeout {
            endpoint: endpoint.clone(),
            timeout: Duration::from_secs(5),
        })?
        .map_err(http_err)?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(ClientError::Status {
            endpoint: endpoint.clone(),
            method: Method::GET,
            path: path.to_owned(),
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(resp)
}

/// GET a JSON document; non-2xx is an error carrying the body.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    endpoint: &Endpoint,
    path: &str,
) -> Result<T, ClientError> {
    let (status, body) = request(endpoint, Method::GET, path, None, Duration::from_secs(5)).await?;
    if !status.is_success() {
        return Err(ClientError::Status {
            endpoint: endpoint.clone(),
            method: Method::GET,
            path: path.to_owned(),
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// PUT a JSON document; non-2xx is an error carrying the body.
pub async fn put_json<T: serde::Serialize>(
    endpoint: &Endpoint,
    path: &str,
    value: &T,
) -> Result<(), ClientError> {
    let body = serde_json::to_vec(value).expect("report types serialize");
    let (status, resp) = request(
        endpoint,
        Method::PUT,
        path,
        Some(body),
        Duration::from_secs(5),
    )
    .await?;
    if !status.is_success() {
        return Err(ClientError::Status {
            endpoint: endpoint.clone(),
            method: Method::PUT,
            path: path.to_owned(),
            status,
            body: String::from_utf8_lossy(&resp).into_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            "http://127.0.0.1:9696".parse(),
            Ok(Endpoint::Tcp("127.0.0.1:9696".into()))
        );
        assert_eq!(
            "http://localhost:1/".parse(),
            Ok(Endpoint::Tcp("localhost:1".into()))
        );
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(Endpoint::Unix("/run/x.sock".into()))
        );
        for bad in [
            "",
            "unix:",
            "127.0.0.1:9696",
            "https://a:1",
            "http://",
            "http://noport",
            "http://a:1/x",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?} accepted");
        }
    }
}
