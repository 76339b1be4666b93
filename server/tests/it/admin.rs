//! The operator's endpoints served in process: `/metrics` (requests show up in it once their
//! bodies have ended; a client on another host is refused) and `/health`.

use std::sync::Arc;

use axum::extract::Request;
use subserve::{ClientAddr, ConnLimits, Listener, Process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Serves `app` on 127.0.0.1:0 until the test ends; returns its address.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(subserve::conn::serve(
        vec![Listener::Tcp(listener)],
        app,
        ConnLimits::with_defaults(1024, 64),
        None,
        std::future::pending(),
    ));
    addr
}

/// `GET path` on a connection of its own; returns the status and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn requests_are_counted_once_answered() {
    let process = Arc::new(Process::without_audit("http://127.0.0.1"));
    let addr = serve(subserve::router_with(&[], &process)).await;
    let hash = "7rjj86a15146cq1d3qy068lml7n8ykzm";
    assert_eq!(get(addr, &format!("/{hash}.narinfo")).await.0, 404);
    assert_eq!(get(addr, &format!("/{hash}.narinfo")).await.0, 404);
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("subserve_http_requests_total{store=\"/\",kind=\"narinfo\",status=\"404\"} 2"), "{text}");
    assert!(text.contains("subserve_narinfo_request_duration_seconds_count{store=\"/\"} 2"), "{text}");
}

#[tokio::test]
async fn metrics_are_for_this_host_only() {
    let process = Arc::new(Process::without_audit("http://127.0.0.1"));
    // Every request seems to come from another host.
    let elsewhere = axum::middleware::map_request(|mut request: Request| async move {
        request.extensions_mut().insert(ClientAddr("10.0.0.7:40000".parse().unwrap()));
        request
    });
    let addr = serve(subserve::router_with(&[], &process).layer(elsewhere)).await;
    assert_eq!(get(addr, "/metrics").await.0, 403);
}

#[tokio::test]
async fn health_answers_at_once() {
    let addr = serve(subserve::router(&[])).await;
    let (status, text) = get(addr, "/health").await;
    assert_eq!((status, text.as_str()), (200, "ok: 0 store(s) answer\n"));
}
