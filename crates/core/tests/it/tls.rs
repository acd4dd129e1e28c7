//! Remote upstreams over TLS (`https://`, `wss://`), as a person runs them: the real
//! `switchboard` binary as a child process, trusting a private CA through `SSL_CERT_FILE` in
//! its environment (the child is needed for that: this process may not change its own
//! environment), against the rmcp peers of `remote.rs` behind a real TLS server (OpenSSL
//! through tokio-native-tls) on 127.0.0.1:0, with a throwaway CA and server certificate made
//! here for `127.0.0.1` and `localhost`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Name};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::remote::{Kind, PeerTools, router};
use crate::support::*;

const BIN: &str = SWITCHBOARD_BIN;

/// A private CA and a server certificate it signed, as PEM.
struct Pki {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    /// The server's key, PKCS#8.
    key_pem: Vec<u8>,
}

fn p256_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn common_name(cn: &str) -> X509Name {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    name.build()
}

fn random_serial() -> Asn1Integer {
    let mut n = BigNum::new().unwrap();
    n.rand(63, MsbOption::MAYBE_ZERO, false).unwrap();
    n.to_asn1_integer().unwrap()
}

/// Valid from an hour ago (no clock-skew surprises) for a day.
fn validity(b: &mut openssl::x509::X509Builder) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now - 3600).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
}

impl Pki {
    fn new() -> Self {
        let ca_key = p256_key();
        let ca_name = common_name("Switchboard test CA (throwaway)");
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&random_serial()).unwrap();
        b.set_subject_name(&ca_name).unwrap();
        b.set_issuer_name(&ca_name).unwrap();
        b.set_pubkey(&ca_key).unwrap();
        validity(&mut b);
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&ca_key, MessageDigest::sha256()).unwrap();
        let ca = b.build();

        let key = p256_key();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&random_serial()).unwrap();
        b.set_subject_name(&common_name("localhost")).unwrap();
        b.set_issuer_name(ca.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        validity(&mut b);
        b.append_extension(BasicConstraints::new().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(Some(&ca), None))
            .unwrap();
        b.append_extension(san).unwrap();
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&ca), None))
            .unwrap();
        b.append_extension(aki).unwrap();
        b.sign(&ca_key, MessageDigest::sha256()).unwrap();
        let cert = b.build();

        Self {
            ca_pem: ca.to_pem().unwrap(),
            cert_pem: cert.to_pem().unwrap(),
            key_pem: key.private_key_to_pem_pkcs8().unwrap(),
        }
    }

    fn acceptor(&self) -> tokio_native_tls::TlsAcceptor {
        let identity = native_tls::Identity::from_pkcs8(&self.cert_pem, &self.key_pem).unwrap();
        native_tls::TlsAcceptor::new(identity).unwrap().into()
    }
}

/// Connections whose TLS handshake is done, for `axum::serve`.
struct TlsListener {
    addr: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<tokio_native_tls::TlsStream<tokio::net::TcpStream>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_native_tls::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(stream) => (stream, self.addr),
            // The acceptor is gone (the peer is being dropped): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// A `remote.rs` peer served over TLS only: every connection is a TLS handshake first, each
/// in its own task (a client that fails it is noted and holds up no one).
struct TlsPeer {
    addr: SocketAddr,
    kind: Kind,
    /// Why each failed handshake failed, as the server saw it.
    failed_handshakes: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl TlsPeer {
    async fn start(kind: Kind, pki: &Pki) -> Self {
        let acceptor = pki.acceptor();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (tx, ready) = tokio::sync::mpsc::channel(16);
        let failed_handshakes = Arc::new(Mutex::new(Vec::new()));
        let failed = failed_handshakes.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                let (acceptor, tx, failed) = (acceptor.clone(), tx.clone(), failed.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(WAIT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(tls).await;
                        }
                        Ok(Err(e)) => failed.lock().unwrap().push(e.to_string()),
                        Err(_) => failed.lock().unwrap().push("handshake timed out".into()),
                    }
                });
            }
        });
        let app = router(kind, PeerTools::default(), Arc::default(), None);
        let serving = tokio::spawn(async move {
            let _ = axum::serve(TlsListener { addr, ready }, app).await;
        });
        Self {
            addr,
            kind,
            failed_handshakes,
            tasks: vec![accepting, serving],
        }
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::Ws => format!("wss://{}/ws", self.addr),
            _ => format!("https://{}/mcp", self.addr),
        }
    }
}

impl Drop for TlsPeer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The `switchboard serve` child with remote servers `web` (`https://`) and `sock` (`wss://`),
/// and a token paired with it. Killed when dropped.
struct Gateway {
    /// Killed on drop (a failing test leaves no gateway behind).
    _child: ChildGuard,
    base: String,
    token: String,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// `ca`: the file `SSL_CERT_FILE` names, or `None` for no such variable at all.
    async fn start(web: &TlsPeer, sock: &TlsPeer, ca: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\ntoken_store = \"memory\"\n\n\
                 [[servers]]\nname = \"web\"\nurl = \"{}\"\n\n\
                 [[servers]]\nname = \"sock\"\nurl = \"{}\"\n",
                web.url(),
                sock.url()
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .env("SWITCHBOARD_LOG", "warn")
            // Whatever this machine's environment says, only what the test chooses counts.
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if let Some(ca) = ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let mut child = ChildGuard::spawn(&mut cmd);
        let base = listening_base(&mut child).await;
        let token = pair_with_cli(&base, &data, "tls-test").await;
        Self {
            _child: child,
            base,
            token,
            stderr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    async fn server(&self, name: &str) -> Value {
        let servers: Value = reqwest::Client::new()
            .get(format!("{}/api/servers", self.base))
            .bearer_auth(&self.token)
            .timeout(WAIT)
            .send()
            .await
            .expect("GET /api/servers")
            .json()
            .await
            .expect("servers JSON");
        servers["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no server {name} in {servers}"))
    }

    /// Polls `/api/servers` (bounded) until `pred` holds for server `name`; returns its entry.
    async fn wait_server(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.server(name).await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: {what}: {s}\nlog: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// Several threads: the TLS peers run in this runtime beside the test's own waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_remotes_work_when_their_private_ca_is_trusted_through_ssl_cert_file() {
    let pki = Pki::new();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &pki.ca_pem).unwrap();
    let web = TlsPeer::start(Kind::HttpSse, &pki).await;
    let sock = TlsPeer::start(Kind::Ws, &pki).await;
    let gw = Gateway::start(&web, &sock, Some(ca.path())).await;

    for (name, peer) in [("web", &web), ("sock", &sock)] {
        let s = gw
            .wait_server(name, "running", |s| s["state"] == "running")
            .await;
        assert_eq!(s["url"], peer.url());
        assert_eq!(s["last_error"], Value::Null, "{s}");
    }
    let mut mcp = McpHttp::to(format!("{}/mcp", gw.base), gw.token.clone())
        .initialize()
        .await;
    let names = mcp
        .wait_tools("both remotes' tools", |n| {
            n.iter().any(|t| t == "web__echo") && n.iter().any(|t| t == "sock__echo")
        })
        .await;
    for t in ["web__slow", "web__add_tool", "sock__slow", "sock__add_tool"] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }
    let reply = mcp.call("web__echo", json!({"text": "over https"})).await;
    assert_eq!(reply.text(), "over https", "{:?}", reply.messages);
    let reply = mcp.call("sock__echo", json!({"text": "over wss"})).await;
    assert_eq!(reply.text(), "over wss", "{:?}", reply.messages);
    let reply = mcp
        .call("sock__slow", json!({"steps": 2, "step_ms": 10}))
        .await;
    assert_eq!(reply.text(), "done after 2 steps", "{:?}", reply.messages);

    // Every connection the gateway made was TLS that it accepted.
    assert!(web.failed_handshakes.lock().unwrap().is_empty());
    assert!(sock.failed_handshakes.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_private_ca_tls_remotes_stay_down_with_a_reason_naming_the_certificate() {
    let pki = Pki::new();
    let web = TlsPeer::start(Kind::HttpSse, &pki).await;
    let sock = TlsPeer::start(Kind::Ws, &pki).await;
    let gw = Gateway::start(&web, &sock, None).await;

    for (name, peer) in [("web", &web), ("sock", &sock)] {
        let s = gw
            .wait_server(name, "down with a reason", |s| {
                s["state"] == "restarting" && s["last_error"].is_string()
            })
            .await;
        let reason = s["last_error"].as_str().unwrap();
        eprintln!("{name}: {reason}");
        assert!(reason.contains(&peer.url()), "{reason}");
        assert!(reason.contains("certificate"), "{reason}");
        assert!(reason.contains("SSL_CERT_FILE"), "{reason}");
        // The gateway reached the TLS server and refused its certificate (the server hears
        // the client's alert), rather than failing somewhere before.
        let seen = peer.failed_handshakes.lock().unwrap().clone();
        assert!(
            seen.iter().any(|e| e.contains("unknown ca")),
            "{name}: {seen:?}"
        );
    }
    // Nothing of theirs is offered meanwhile.
    let mut mcp = McpHttp::to(format!("{}/mcp", gw.base), gw.token.clone())
        .initialize()
        .await;
    let names = mcp.tool_names().await;
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("web__") || n.starts_with("sock__")),
        "{names:?}"
    );
}
