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
