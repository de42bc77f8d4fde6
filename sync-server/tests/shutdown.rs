//! Graceful shutdown: a request in flight when shutdown starts still gets its answer, and the
//! server then stops (backend-independent, so on SQLite only).
// Tests assert with unwrap/expect: a failure should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fitedge_server::config::HashCost;
use fitedge_server::db::Backend;
use fitedge_server::testing::{TestApp, PASSWORD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_after_shutdown_starts() {
    // The production hash cost makes sign-in slow enough to be caught in flight.
    let app = TestApp::with_config(Backend::Sqlite, |c| c.hash_cost = HashCost::Standard)
        .await
        .unwrap();
    app.register_verified("sd@example.com").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fitedge_server::serve_on(
        app.state.clone(),
        listener,
        async {
            let _ = stop_rx.await;
        },
    ));

    let body = format!(r#"{{"email":"sd@example.com","password":"{PASSWORD}"}}"#);
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    // Let the request reach the handler (argon2 takes tens of milliseconds), then stop.
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop_tx.send(()).unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("access_token"));
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
    // And it no longer accepts connections.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
