//! The paired clients (and any named secret: header values, OAuth logins) in the OS keychain,
//! via the `keyring` crate: the Secret Service (D-Bus)
//! on Linux and the BSDs, the login Keychain on macOS, the Credential Manager on Windows.
//!
//! This module owns one keychain entry (service name from the caller, account
//! [`ACCOUNT`]) whose secret is the whole client list as compact JSON, and the translation of
//! keychain failures into [`TokenStoreError`]s that tell the person what to do. The records
//! hold only `sha256(token)`, and nothing here logs or formats a secret.
//!
//! Every call is blocking and may block *forever*: a locked keyring answers with an unlock
//! prompt that may be invisible (no desktop session) and is never dismissed. Callers must run
//! [`TokenStore::load`], [`TokenStore::save`], [`KeychainTokenStore::probe`] and
//! [`KeychainTokenStore::delete`] on a blocking thread with a timeout, and report a timeout
//! as [`TokenStoreError::Locked`].
//!
//! The platform store is connected once per process, on first use (that is how `keyring`'s
//! `v1` mode works): if it is unavailable then, it stays unavailable until a restart.

use keyring::{Entry, Error};

use super::store::{ClientRecord, TokenStore, TokenStoreError};

/// The keychain account (user name) under which the client list is stored.
pub const ACCOUNT: &str = "paired-clients";

/// The OS keychain, holding the client list as one JSON secret.
#[derive(Debug, Clone)]
pub struct KeychainTokenStore {
    service: String,
}

impl KeychainTokenStore {
    /// The entry `(service, ACCOUNT)`; the product uses the service `"switchboard"`, tests
    /// their own. Touches nothing until the first call.
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
        }
    }

    /// A real round trip to the keychain (a read), so that startup can report a missing or
    /// locked keychain before the first client tries to pair. Blocking, see the module docs.
    pub fn probe(&self) -> Result<(), TokenStoreError> {
        self.load().map(drop)
    }

    /// Removes the entry; succeeds if there was none. Blocking, see the module docs.
    pub fn delete(&self) -> Result<(), TokenStoreError> {
        match self.entry()?.delete_credential() {
            Ok(()) | Err(Error::NoEntry) => Ok(()),
            Err(e) => Err(self.map_error(e)),
        }
    }

    fn entry(&self) -> Result<Entry, TokenStoreError> {
        Entry::new(&self.service, ACCOUNT).map_err(|e| match (e, Entry::store_status()) {
            // The platform store failed to initialise; its own error says why.
            (Error::NoDefaultStore, Err(cause)) => unavailable(cause),
            (e, _) => self.map_error(e),
        })
    }

    fn map_error(&self, e: Error) -> TokenStoreError {
        map_error(format!("OS keychain entry {}/{ACCOUNT}", self.service), e)
    }
}

/// Any secret in the OS keychain, by service and account: header values of remote servers.
/// Blocking, like everything here (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct KeychainSecrets;

impl super::store::SecretStore for KeychainSecrets {
    fn describe(&self) -> String {
        format!("OS keychain ({KEYCHAIN})")
    }

    fn secret(&self, service: &str, account: &str) -> Result<Option<String>, TokenStoreError> {
        match any_entry(service, account)?.get_password() {
            Ok(secret) => Ok(Some(secret)),
            Err(Error::NoEntry) => Ok(None),
            Err(e) => Err(map_error(entry_name(service, account), e)),
        }
    }

    fn set_secret(
        &self,
        service: &str,
        account: &str,
        secret: &str,
    ) -> Result<(), TokenStoreError> {
        any_entry(service, account)?
            .set_password(secret)
            .map_err(|e| map_error(entry_name(service, account), e))
    }

    fn delete_secret(&self, service: &str, account: &str) -> Result<(), TokenStoreError> {
        match any_entry(service, account)?.delete_credential() {
            Ok(()) | Err(Error::NoEntry) => Ok(()),
            Err(e) => Err(map_error(entry_name(service, account), e)),
        }
    }
}

fn entry_name(service: &str, account: &str) -> String {
    format!("OS keychain entry {service}/{account}")
}

fn any_entry(service: &str, account: &str) -> Result<Entry, TokenStoreError> {
    Entry::new(service, account).map_err(|e| match (e, Entry::store_status()) {
        (Error::NoDefaultStore, Err(cause)) => unavailable(cause),
        (e, _) => map_error(entry_name(service, account), e),
    })
}

/// A keychain failure as a [`TokenStoreError`] that says what to do; `what` names the entry.
fn map_error(what: String, e: Error) -> TokenStoreError {
    match e {
        Error::NoStorageAccess(cause) => TokenStoreError::Locked(format!(
            "the OS keychain is locked or refused access ({cause}); {UNLOCK_HINT}"
        )),
        Error::PlatformFailure(_) | Error::NoDefaultStore => unavailable(&e),
        // Neither message includes the secret's bytes.
        Error::BadEncoding(_) | Error::BadDataFormat(..) => {
            TokenStoreError::Corrupt(format!("{what} cannot be read: {e}"))
        }
        Error::Ambiguous(items) => TokenStoreError::Corrupt(format!(
            "{what} matches {} keychain items; delete them in the keychain manager and pair \
                 the clients again",
            items.len()
        )),
        Error::TooLong(..) => TokenStoreError::Io(format!(
            "{what}: too many paired clients for one keychain item ({e}); unpair some, or \
                 set token_store = \"file\" in the config"
        )),
        e => TokenStoreError::Io(format!("{what}: {e}")),
    }
}

impl TokenStore for KeychainTokenStore {
    fn describe(&self) -> String {
        format!("OS keychain ({KEYCHAIN})")
    }

    fn load(&self) -> Result<Vec<ClientRecord>, TokenStoreError> {
        match self.entry()?.get_password() {
            Ok(json) => serde_json::from_str(&json).map_err(|e| {
                TokenStoreError::Corrupt(format!(
                    "OS keychain entry {}/{ACCOUNT} is not a client list: {e}",
                    self.service
                ))
            }),
            Err(Error::NoEntry) => Ok(Vec::new()),
            Err(e) => Err(self.map_error(e)),
        }
    }

    fn save(&self, clients: &[ClientRecord]) -> Result<(), TokenStoreError> {
        let json = serde_json::to_string(clients)
            .map_err(|e| TokenStoreError::Io(format!("cannot encode the client list: {e}")))?;
        let entry = self.entry()?;
        entry.set_password(&json).map_err(|e| self.map_error(e))
    }
}

fn unavailable(cause: &Error) -> TokenStoreError {
    TokenStoreError::Unavailable(format!("no OS keychain: {NO_KEYCHAIN_HINT} ({cause})"))
}

#[cfg(target_os = "macos")]
const KEYCHAIN: &str = "macOS Keychain";
#[cfg(target_os = "macos")]
const NO_KEYCHAIN_HINT: &str = "the login Keychain cannot be opened; check it in Keychain \
    Access and restart Switchboard, or set token_store = \"file\" in the config";
#[cfg(target_os = "macos")]
const UNLOCK_HINT: &str = "unlock the login Keychain in Keychain Access, and allow Switchboard \
    when asked";

#[cfg(target_os = "windows")]
const KEYCHAIN: &str = "Windows Credential Manager";
#[cfg(target_os = "windows")]
const NO_KEYCHAIN_HINT: &str = "the Windows Credential Manager cannot be used; restart \
    Switchboard in a normal user session, or set token_store = \"file\" in the config";
#[cfg(target_os = "windows")]
const UNLOCK_HINT: &str = "log in to Windows as this user and try again";

#[cfg(not(any(target_os = "macos", target_os = "windows")))]
const KEYCHAIN: &str = "Secret Service";
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
const NO_KEYCHAIN_HINT: &str = "the Secret Service (gnome-keyring or KWallet) is not running \
    on the D-Bus session bus; start one and restart Switchboard, or set token_store = \"file\" \
    in the config";
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
const UNLOCK_HINT: &str = "unlock the login keyring (log in to the desktop, or open Passwords \
    and Keys / KWallet Manager) and try again";

#[cfg(test)]
mod tests {
    use super::*;

    // `keyring::Error` values that need no keychain; the round trip through a real keychain is
    // in `tests/keychain.rs`.
    fn other() -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(std::io::Error::other("boom"))
    }

    #[test]
    fn errors_map_to_kinds_with_advice_and_without_secret_bytes() {
        let store = KeychainTokenStore::new("switchboard-test");
        let locked = store.map_error(Error::NoStorageAccess(other()));
        assert!(
            matches!(&locked, TokenStoreError::Locked(m) if m.contains("unlock")),
            "{locked:?}"
        );
        let gone = store.map_error(Error::PlatformFailure(other()));
        assert!(
            matches!(&gone, TokenStoreError::Unavailable(m) if m.contains("token_store = \"file\"")),
            "{gone:?}"
        );
        let secret = b"\xffsecret-bytes".to_vec();
        let bad = store.map_error(Error::BadEncoding(secret));
        assert!(
            matches!(&bad, TokenStoreError::Corrupt(m) if !m.contains("secret-bytes")),
            "{bad:?}"
        );
        let long = store.map_error(Error::TooLong("secret".into(), 2560));
        assert!(
            matches!(&long, TokenStoreError::Io(m) if m.contains("unpair")),
            "{long:?}"
        );
    }
}
