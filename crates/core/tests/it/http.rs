//! The HTTP surface: health, the read API, and the local-only guard on every route.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn healthz_reports_status_and_counts() {
    let gw = TestGateway::start().await;
    let h = gw.health().await;
    assert_eq!(h["status"], "ok");
    assert_eq!(h["projects_online"], 0);
    let mut ws = gw.ws().await;
    assert!(ws.register(&project_dir("health")).await);
    let h = gw.health().await;
    assert_eq!(h["projects_online"], 1);
    assert_eq!(h["registration_sockets"], 1);
}

#[tokio::test]
async fn a_foreign_host_is_misdirected_on_every_route() {
    let gw = TestGateway::start().await;
    let port = gw.addr.port();
    for (path, host) in [
        ("/healthz", format!("evil.example:{port}")),
        ("/api/projects", format!("localhost.evil.example:{port}")),
        ("/api/projects", "127.0.0.1".to_owned()),
        ("/ws/mcp", format!("192.168.1.20:{port}")),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(
            raw_status(gw.addr, &req).await,
            421,
            "{path} with Host {host}"
        );
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_status(gw.addr, &req).await, 200, "Host {host}");
    }
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_our_own_is_welcome() {
    let gw = TestGateway::start().await;
    let url = gw.ws_url();
    let err = WsClient::connect_with_origin(&url, "http://evil.example")
        .await
        .err()
        .expect("upgrade refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    let own = format!("http://localhost:{}", gw.addr.port());
    let mut ws = WsClient::connect_with_origin(&url, &own)
        .await
        .expect("own origin");
    ws.hello().await;
    let mut ws = WsClient::connect_with_origin(&url, "tauri://localhost")
        .await
        .expect("webview origin");
    ws.hello().await;

    let client = reqwest::Client::new();
    let r = client
        .get(gw.url("/api/projects"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "foreign_origin");
    let r = client
        .get(gw.url("/api/projects"))
        .bearer_auth(&gw.token)
        .header("origin", own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_desktop_webview_gets_cors_answers_and_other_pages_do_not() {
    let gw = TestGateway::start().await;
    let client = reqwest::Client::new();
    // the preflight comes without a token and is answered before authentication
    let r = client
        .request(reqwest::Method::OPTIONS, gw.url("/api/clients"))
        .header("origin", "tauri://localhost")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "tauri://localhost");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    // the real request still needs the token, and its answer is labelled for the webview
    let r = client
        .get(gw.url("/api/clients"))
        .header("origin", "tauri://localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "tauri://localhost"
    );
    let r = client
        .get(gw.url("/api/clients"))
        .bearer_auth(&gw.token)
        .header("origin", "tauri://localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "tauri://localhost"
    );
    // our own page is same-origin: no CORS headers; a foreign page gets no preflight answer
    let own = format!("http://127.0.0.1:{}", gw.addr.port());
    let r = client
        .get(gw.url("/api/clients"))
        .bearer_auth(&gw.token)
        .header("origin", own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = client
        .request(reqwest::Method::OPTIONS, gw.url("/api/clients"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let gw = TestGateway::start().await;
    // (other paths without an extension are the dashboard's own routes: see dashboard.rs)
    for path in ["/api/nope", "/nope.txt"] {
        let r = reqwest::get(gw.url(path)).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
}

#[tokio::test]
async fn a_plain_get_on_the_registration_socket_is_refused() {
    let gw = TestGateway::start().await;
    let r = reqwest::get(gw.url("/ws/mcp")).await.unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
}

#[tokio::test]
async fn the_event_stream_carries_typed_numbered_events() {
    let gw = TestGateway::start().await;
    let mut events = gw.events().await;
    let dir = project_dir("sse");
    let mut ws = gw.ws().await;
    assert!(ws.register(&dir).await);
    let (name, data) = events.next().await;
    assert_eq!(name, "project_online");
    assert_eq!(data["type"], "project_online");
    assert_eq!(data["sockets"], 1);
    assert_eq!(
        data["name"],
        json!(dir.file_name().unwrap().to_string_lossy())
    );
    let seq = data["seq"].as_u64().unwrap();
    chrono::DateTime::parse_from_rfc3339(data["timestamp"].as_str().unwrap()).unwrap();
    drop(ws);
    let (name, data) = events.next().await;
    assert_eq!(name, "project_offline");
    assert!(data["seq"].as_u64().unwrap() > seq);
}

#[tokio::test]
async fn event_streams_end_on_shutdown() {
    let gw = TestGateway::start().await;
    let mut events = gw.events().await;
    gw.stop().await.expect("clean stop");
    assert!(events.next_within(WAIT).await.is_none());
}
