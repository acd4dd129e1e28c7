//! The project registry on disk: restarts, and a database that cannot be used.

use crate::support::*;

#[tokio::test]
async fn the_registry_survives_a_restart_and_shows_known_projects_offline() {
    let data = tempfile::tempdir().unwrap();
    let dir = project_dir("persist");
    let gw = TestGateway::in_dir(data.path(), |_| {}).await.unwrap();
    let mut ws = gw.ws().await;
    assert!(ws.register(&dir).await);
    let before = gw.project(&dir).await.unwrap();
    assert_eq!(before["online"], true);
    gw.stop().await.unwrap();

    let gw = TestGateway::in_dir(data.path(), |_| {}).await.unwrap();
    let after = gw.project(&dir).await.expect("remembered");
    assert_eq!(after["online"], false);
    assert_eq!(after["sockets"], 0);
    assert_eq!(after["first_seen"], before["first_seen"]);
    assert_eq!(after["name"], before["name"]);

    let mut ws = gw.ws().await;
    assert!(ws.register(&dir).await);
    let again = gw.project(&dir).await.unwrap();
    assert_eq!(again["online"], true);
    assert_eq!(again["first_seen"], before["first_seen"]);
    assert_eq!(gw.projects().await.len(), 1);
}

#[tokio::test]
async fn a_corrupt_database_is_a_startup_error_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("registry.db");
    std::fs::write(
        &db,
        b"this is not an SQLite database, it is a shopping list".repeat(100),
    )
    .unwrap();
    let err = TestGateway::in_dir(data.path(), |_| {})
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains(&*db.to_string_lossy()), "{text}");
    assert!(text.contains("corrupt"), "{text}");
}

#[tokio::test]
async fn an_unusable_data_dir_is_a_startup_error_naming_it() {
    let data = tempfile::tempdir().unwrap();
    let blocker = data.path().join("blocker");
    std::fs::write(&blocker, b"a file where a directory should be").unwrap();
    let err = TestGateway::in_dir(&blocker.join("state"), |_| {})
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("blocker"), "{err}");
}

/// A real write failure, caused through SQLite itself: another connection installs a trigger
/// that aborts every write to the registry table.
#[tokio::test]
async fn a_failed_registry_write_is_an_internal_error_and_nothing_is_half_registered() {
    let gw = TestGateway::start().await;
    let db = rusqlite::Connection::open(gw.data_dir.join("registry.db")).unwrap();
    db.busy_timeout(WAIT).unwrap();
    db.execute_batch(
        "CREATE TRIGGER no_insert BEFORE INSERT ON projects BEGIN SELECT RAISE(ABORT, 'disk says no'); END;
         CREATE TRIGGER no_update BEFORE UPDATE ON projects BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
    )
    .unwrap();
    let dir = project_dir("write-fails");
    let mut ws = gw.ws().await;
    ws.send("register", project_info(&dir)).await;
    // refused as every register is: registered{success:false} first (the one frame the real
    // client reads, and backs off on), then the reason, then goodbye and close 1011
    assert_eq!(
        ws.expect("registered").await,
        serde_json::json!({"success": false})
    );
    let err = ws.expect_error("internal_error").await;
    assert!(
        err["message"].as_str().unwrap().contains("disk says no"),
        "{err}"
    );
    let (reason, frame) = ws.goodbye().await;
    assert!(reason.contains("internal_error"), "{reason}");
    assert_eq!(u16::from(frame.expect("close frame").code), 1011);
    assert!(gw.project(&dir).await.is_none(), "not half-registered");
    assert_eq!(gw.health().await["projects_online"], 0);

    // the fault goes away: the client's next socket registers
    db.execute_batch("DROP TRIGGER no_insert; DROP TRIGGER no_update;")
        .unwrap();
    let mut ws = gw.ws().await;
    assert!(ws.register(&dir).await);
    assert_eq!(gw.project(&dir).await.unwrap()["online"], true);
}
