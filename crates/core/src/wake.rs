//! Sleep, wake and network changes: what tells the gateway that remote servers waiting out a
//! reconnect backoff should try again at once ([`McpGateway::resumed`]), and the dashboard
//! why (a `resumed` event).
//!
//! Three watchers, each bounded and each ending with the gateway:
//! - the clock: every [`CLOCK_CHECK`], the wall clock compared with the monotonic one (which
//!   stops while the machine sleeps); works everywhere, notices a sleep within two seconds;
//! - logind (Linux): `PrepareForSleep(false)` on the system bus, sent the moment the machine
//!   resumes; where there is no system bus, the clock covers it;
//! - the network (Linux): the default routes in `/proc/net/route`, read every
//!   [`ROUTE_CHECK`]; when one appears or they change (a network came back, another was
//!   joined), the remotes' connections are likely new too.
//!
//! One sleep is told once: the clock and logind share the time of the last one told and stay
//! quiet for [`WAKE_QUIET`] after it (a resume is seen by both); a network coming back is
//! always told (see [`is_repeat`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::auth::store::{RouteTable, WallClock};
use crate::mcp::McpGateway;

/// How often the wall clock is compared with the monotonic one.
const CLOCK_CHECK: Duration = Duration::from_secs(2);
/// How far the wall clock must have run ahead of the monotonic one between two looks for the
/// machine to have slept (the monotonic clock stops while it sleeps; the wall clock does not).
const RESUME_JUMP: Duration = Duration::from_secs(5);
/// How often the routing table is read.
const ROUTE_CHECK: Duration = Duration::from_secs(2);
/// After a wake-up is told, how long others are taken for the same one.
const WAKE_QUIET: Duration = Duration::from_secs(10);
/// How long connecting to the system bus may take before logind is given up on.
const BUS_CONNECT: Duration = Duration::from_secs(5);

/// What woke the remotes, as the `resumed` event's `why` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The wall clock ran ahead of the monotonic one.
    Clock,
    /// logind said the machine resumed.
    Logind,
    /// A default route appeared or changed.
    Network,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Clock => "clock",
            Why::Logind => "logind",
            Why::Network => "network",
        }
    }
}

/// Where the watchers look: the system's clock, routing table and bus unless a test hands in
/// others.
#[derive(Clone, Debug)]
pub(crate) struct Sources {
    pub wall: WallClock,
    pub routes: RouteTable,
    /// The D-Bus address logind is listened for on; `None`: the system bus.
    pub system_bus: Option<String>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            wall: WallClock(Arc::new(SystemTime::now)),
            routes: RouteTable(Arc::new(|| std::fs::read_to_string("/proc/net/route"))),
            system_bus: None,
        }
    }
}

/// Tells the gateway of wake-ups, once each.
#[derive(Clone)]
struct Teller {
    mcp: McpGateway,
    last: Arc<Mutex<Option<Instant>>>,
}

impl Teller {
    fn tell(&self, why: Why, slept: Duration) {
        let repeat = is_repeat(
            &mut self.last.lock().expect("wake lock"),
            why,
            Instant::now(),
        );
        if repeat {
            tracing::debug!(why = why.as_str(), "wake-up already told");
            return;
        }
        self.mcp.resumed(why.as_str(), slept);
    }
}

/// Whether a wake-up of `why` at `now` is one already told: a sleep seen by the clock and by
/// logind both, within [`WAKE_QUIET`] of the last sleep told (`last`, updated here). A network
/// coming back is never a repeat: it often comes seconds after the resume, when the first
/// reconnects have already failed for want of it.
fn is_repeat(last: &mut Option<Instant>, why: Why, now: Instant) -> bool {
    if why == Why::Network {
        return false;
    }
    if last.is_some_and(|t| now.saturating_duration_since(t) < WAKE_QUIET) {
        return true;
    }
    *last = Some(now);
    false
}

/// Starts the watchers on `tasks`; they end when `stop` is cancelled.
pub(crate) fn watch(
    mcp: McpGateway,
    sources: Sources,
    stop: &CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    let teller = Teller {
        mcp,
        last: Arc::default(),
    };
    tasks.spawn(watch_clock(teller.clone(), sources.wall, stop.clone()));
    tasks.spawn(watch_routes(teller.clone(), sources.routes, stop.clone()));
    #[cfg(target_os = "linux")]
    tasks.spawn(watch_logind(teller, sources.system_bus, stop.clone()));
}

/// How long the machine slept between two looks, `mono` and `wall` apart on each clock
/// (`None` for `wall`: it went back, as when it is set back by hand, which is no sleep).
fn slept(mono: Duration, wall: Option<Duration>) -> Option<Duration> {
    wall?.checked_sub(mono).filter(|d| *d >= RESUME_JUMP)
}

async fn watch_clock(teller: Teller, wall: WallClock, stop: CancellationToken) {
    let mut before = (Instant::now(), (wall.0)());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CLOCK_CHECK) => {}
        }
        let now = (Instant::now(), (wall.0)());
        let mono = now.0.duration_since(before.0);
        if let Some(asleep) = slept(mono, now.1.duration_since(before.1).ok()) {
            teller.tell(Why::Clock, asleep);
        }
        before = now;
    }
}

/// The default routes of a `/proc/net/route` table, as one comparable line each
/// (`<interface> <gateway>`, sorted); empty when there is none (no network).
fn default_routes(table: &str) -> Vec<String> {
    const RTF_UP: u32 = 0x1;
    let mut routes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, gateway, flags) = (f.first()?, f.get(1)?, f.get(2)?, f.get(3)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            (*dest == "00000000" && flags & RTF_UP != 0).then(|| format!("{iface} {gateway}"))
        })
        .collect();
    routes.sort();
    routes.dedup();
    routes
}

/// Whether going from `before` to `now` (each [`default_routes`]) is a network coming back
/// or changing: there is a default route now, and it is not the one there was.
fn network_came(before: &[String], now: &[String]) -> bool {
    !now.is_empty() && before != now
}

async fn watch_routes(teller: Teller, routes: RouteTable, stop: CancellationToken) {
    let read = |routes: &RouteTable| match (routes.0)() {
        Ok(table) => Some(default_routes(&table)),
        Err(e) => {
            tracing::debug!(error = %e, "no routing table to watch");
            None
        }
    };
    // where the table cannot be read (not Linux), there is nothing to watch
    let Some(mut before) = read(&routes) else {
        return;
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ROUTE_CHECK) => {}
        }
        let Some(now) = read(&routes) else { continue };
        if network_came(&before, &now) {
            tracing::info!(routes = ?now, "the network came back or changed");
            teller.tell(Why::Network, Duration::ZERO);
        }
        before = now;
    }
}

/// Listens for logind's `PrepareForSleep` on the system bus (or `address`): `true` as the
/// machine goes to sleep (the clocks are noted), `false` as it resumes (the wake-up is told,
/// with how long it slept). Without a bus, or when it goes away, this ends: the clock watcher
/// still notices sleeps.
#[cfg(target_os = "linux")]
async fn watch_logind(teller: Teller, address: Option<String>, stop: CancellationToken) {
    use futures_util::StreamExt;
    const RULE: &str = "type='signal',interface='org.freedesktop.login1.Manager',\
                        member='PrepareForSleep',path='/org/freedesktop/login1'";
    let connect = async {
        let builder = match &address {
            Some(a) => zbus::connection::Builder::address(a.as_str()),
            None => zbus::connection::Builder::system(),
        };
        let conn = builder.build().await?;
        let stream =
            zbus::MessageStream::for_match_rule(RULE, &conn, std::num::NonZeroUsize::new(16))
                .await?;
        Ok::<_, zbus::Error>((conn, stream))
    };
    let (_conn, mut stream) = match tokio::time::timeout(BUS_CONNECT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no system bus: sleeps are noticed by the clock alone");
            return;
        }
        Err(_) => {
            tracing::debug!("the system bus did not answer: sleeps are noticed by the clock alone");
            return;
        }
    };
    tracing::debug!("listening for logind's PrepareForSleep");
    let mut asleep_since: Option<(Instant, SystemTime)> = None;
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => return,
            msg = stream.next() => msg,
        };
        let Some(msg) = msg else {
            tracing::debug!("the system bus went away");
            return;
        };
        let Ok(msg) = msg else { continue };
        match msg.body().deserialize::<bool>() {
            Ok(true) => asleep_since = Some((Instant::now(), SystemTime::now())),
            Ok(false) => {
                let slept = asleep_since
                    .take()
                    .and_then(|(mono, wall)| {
                        let wall = SystemTime::now().duration_since(wall).ok()?;
                        wall.checked_sub(mono.elapsed())
                    })
                    .unwrap_or_default();
                teller.tell(Why::Logind, slept);
            }
            Err(e) => tracing::debug!(error = %e, "a PrepareForSleep without its boolean"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_ahead_of_the_monotonic_one_is_a_sleep() {
        let s = Duration::from_secs;
        assert_eq!(slept(s(2), Some(s(2))), None);
        assert_eq!(slept(s(2), Some(s(6))), None, "a 4 s jump is jitter");
        assert_eq!(slept(s(2), Some(s(3602))), Some(s(3600)));
        assert_eq!(slept(s(2), None), None, "a clock set back is no sleep");
        assert_eq!(slept(s(9), Some(s(2))), None);
    }

    const TABLE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        wlan0\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
        wlan0\t0002A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n\
        docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    fn a_sleep_is_told_once_and_the_network_always() {
        let t0 = Instant::now();
        let mut last = None;
        assert!(!is_repeat(&mut last, Why::Logind, t0), "the first");
        assert!(
            is_repeat(&mut last, Why::Clock, t0 + Duration::from_secs(2)),
            "the clock seeing the same sleep"
        );
        assert!(
            !is_repeat(&mut last, Why::Network, t0 + Duration::from_secs(5)),
            "the network back after the resume"
        );
        assert!(
            !is_repeat(
                &mut last,
                Why::Clock,
                t0 + WAKE_QUIET + Duration::from_secs(1)
            ),
            "another sleep"
        );
    }

    #[test]
    fn the_default_routes_of_a_table() {
        assert_eq!(default_routes(TABLE), ["wlan0 0102A8C0"]);
        let header_only = TABLE.lines().next().unwrap();
        assert!(default_routes(header_only).is_empty());
        assert!(default_routes("").is_empty());
        // a route that is down (flags without RTF_UP) is no route
        let down = TABLE.replace("\t0003\t", "\t0002\t");
        assert!(default_routes(&down).is_empty());
        // lines cut short or not hex are skipped, not a panic
        assert!(default_routes("h\nwlan0 00000000\nx 00000000 0 zz\n").is_empty());
        let two = format!("{TABLE}eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n");
        assert_eq!(default_routes(&two), ["eth0 0101A8C0", "wlan0 0102A8C0"]);
    }

    #[test]
    fn a_network_comes_back_when_a_new_default_route_appears() {
        let none: Vec<String> = vec![];
        let wifi = vec!["wlan0 0102A8C0".to_owned()];
        let cable = vec!["eth0 0101A8C0".to_owned()];
        assert!(network_came(&none, &wifi), "back");
        assert!(network_came(&wifi, &cable), "another network");
        assert!(!network_came(&wifi, &wifi), "unchanged");
        assert!(!network_came(&wifi, &none), "gone is not back");
        assert!(!network_came(&none, &none));
    }
}
