//! How a sidecar finds its peers by app id: the Configuration's `nameResolution`.
//!
//! - None given: the local registry folder (`registry`), for sidecars on one machine.
//! - `mdns`: each sidecar announces its app id and internal address on the LAN by
//!   multicast DNS, and browses for everyone else's, as `dapr run` does across hosts.
//! - `kubernetes`: DNS names (`<app-id>-dapr.<namespace>.svc.<clusterDomain>` or a template)
//!   on the caller's own internal port, for Kubernetes and compose.
//!
//! Several instances of one app id are called in turn. One whose connection fails or times
//! out is passed over for `DOWN_FOR` (all of them passed over: tried anyway), so a host that
//! stops answering stops getting calls at its first failure, not when its records expire.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::cache::LookupCache;
use crate::registry::Registry;
use crate::resources::NameResolution;

/// How long an instance that failed a call is passed over.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// How long a call waits for an app id nobody has announced yet (daprd: 1 s).
const FIRST_SIGHT_WAIT: Duration = Duration::from_secs(1);

/// How long DNS answers are kept (daprd's Kubernetes resolver: 20 s).
const DNS_CACHE: Duration = Duration::from_secs(20);

/// The mDNS service type every sidecar announces; the app id is in the TXT record.
const MDNS_SERVICE: &str = "_dapr-sidecar._tcp.local.";

/// App ids whose DNS answers are kept at once (as the registry's cache).
const DNS_CACHE_CAP: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NamesError {
    #[error("mDNS: {0}")]
    Mdns(#[from] mdns_sd::Error),
}

/// One sidecar's view of its peers: the resolver the Configuration names, plus what calls
/// have taught it (instances that failed, whose turn is next), which no resolver knows.
pub struct Names {
    resolver: Resolver,
    picks: Mutex<Picks>,
}

#[derive(Default)]
struct Picks {
    /// Instances that failed a call, and until when they are passed over.
    down: HashMap<SocketAddr, Instant>,
    /// Per app id, whose turn is next: a counter shared by all apps would send the calls
    /// of two apps called alternately to the same instance each time.
    next: HashMap<String, usize>,
}

enum Resolver {
    Registry(Arc<Registry>),
    Mdns(Mdns),
    Dns(Dns),
}

impl Names {
    /// The resolver `kind` names. Under mDNS this sidecar announces `app_id` at `own`
    /// (its internal address as peers reach it) until it is dropped.
    pub fn start(
        kind: &NameResolution,
        registry: Arc<Registry>,
        app_id: &str,
        own: SocketAddr,
    ) -> Result<Names, NamesError> {
        let resolver = match kind {
            NameResolution::Registry => Resolver::Registry(registry),
            NameResolution::Mdns => Resolver::Mdns(Mdns::start(app_id, own)?),
            NameResolution::Dns {
                cluster_domain,
                template,
            } => Resolver::Dns(Dns {
                namespace: std::env::var("NAMESPACE")
                    .ok()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "default".into()),
                cluster_domain: cluster_domain.clone(),
                template: template.clone(),
                port: own.port(),
                cache: LookupCache::new(DNS_CACHE, DNS_CACHE_CAP),
            }),
        };
        Ok(Names {
            resolver,
            picks: Mutex::new(Picks::default()),
        })
    }

    /// One live instance of `app_id`, in turn (per app id, whichever resolver found them);
    /// `None` when there is none. Under mDNS and
    /// DNS an app id must be a plain name: it becomes part of a host name, and the peer
    /// secret goes wherever the name leads (`dapr-app-id: evil.example:80` must lead
    /// nowhere).
    pub async fn resolve(&self, app_id: &str) -> Option<SocketAddr> {
        let all = match &self.resolver {
            Resolver::Registry(r) => r
                .ports(app_id)
                .into_iter()
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .collect(),
            _ if !plain_name(app_id) => return None,
            Resolver::Mdns(m) => m.instances(app_id).await,
            Resolver::Dns(d) => d.lookup(app_id).await,
        };
        self.pick(app_id, all)
    }

    fn pick(&self, app_id: &str, mut all: Vec<SocketAddr>) -> Option<SocketAddr> {
        if all.is_empty() {
            return None;
        }
        // One order, whatever order the resolver answered in, so turns are fair.
        all.sort_unstable();
        let now = Instant::now();
        let mut picks = self.picks.lock().unwrap_or_else(PoisonError::into_inner);
        picks.down.retain(|_, until| *until > now);
        let up: Vec<SocketAddr> = all
            .iter()
            .filter(|a| !picks.down.contains_key(a))
            .copied()
            .collect();
        let from = if up.is_empty() { all } else { up };
        let turn = match picks.next.get_mut(app_id) {
            Some(turn) => turn,
            None => picks.next.entry(app_id.to_string()).or_default(),
        };
        *turn = turn.wrapping_add(1);
        Some(from[*turn % from.len()])
    }

    /// A call to `addr` for `app_id` failed on the way (no connection, a dropped one, no
    /// answer in time): pass it over.
    pub fn failed(&self, app_id: &str, addr: SocketAddr) {
        match &self.resolver {
            Resolver::Registry(r) => r.forget(app_id),
            Resolver::Mdns(_) | Resolver::Dns(_) => {
                self.picks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .down
                    .insert(addr, Instant::now() + DOWN_FOR);
                if let Resolver::Dns(d) = &self.resolver {
                    d.cache.forget(app_id);
                }
            }
        }
    }

    /// Stops announcing this sidecar (mDNS: a goodbye, so peers drop it at once), as the
    /// sidecar begins to shut down rather than when its last request has drained.
    pub fn withdraw(&self) {
        if let Resolver::Mdns(m) = &self.resolver {
            m.withdraw();
        }
    }
}

/// A name that can stand in a host name: letters, digits, `-` and `_`, not starting with
/// `-`, at most 63 bytes (one DNS label).
pub fn plain_name(app_id: &str) -> bool {
    !app_id.is_empty()
        && app_id.len() <= 63
        && !app_id.starts_with('-')
        && app_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The address peers on other hosts reach this sidecar at: `DAPR_HOST_IP` when set (as
/// daprd), else the internal listen address when it names one, else the address this host
/// would send from (no packet is sent), else loopback.
pub fn host_address(listen: IpAddr) -> IpAddr {
    if let Some(ip) = std::env::var("DAPR_HOST_IP")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return ip;
    }
    if !listen.is_unspecified() {
        return listen;
    }
    std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 80))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// mDNS: this sidecar's announcement, and what it has heard of everyone else's.
struct Mdns {
    daemon: ServiceDaemon,
    /// The announcement's full name, until withdrawn; none for a sidecar without app id.
    own: Mutex<Option<String>>,
    heard: Arc<Heard>,
}

#[derive(Default)]
struct Heard {
    /// App id → (announcement's full name, address).
    apps: Mutex<HashMap<String, Vec<(String, SocketAddr)>>>,
    changed: tokio::sync::Notify,
}

impl Mdns {
    fn start(app_id: &str, own: SocketAddr) -> Result<Mdns, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        let mut own_name = None;
        if !app_id.is_empty() {
            let dashed = own.ip().to_string().replace(['.', ':'], "-");
            let instance = format!("{app_id}-{dashed}-{}", own.port());
            let info = ServiceInfo::new(
                MDNS_SERVICE,
                &instance,
                &format!("dapr-{dashed}.local."),
                own.ip(),
                own.port(),
                [("appid", app_id)].as_slice(),
            )?;
            own_name = Some(info.get_fullname().to_string());
            daemon.register(info)?;
        }
        let events = daemon.browse(MDNS_SERVICE)?;
        let heard = Arc::new(Heard::default());
        let listener = heard.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv_async().await {
                listener.take(event);
            }
        });
        Ok(Mdns {
            daemon,
            own: Mutex::new(own_name),
            heard,
        })
    }

    /// Unregisters (a goodbye on the wire) without waiting for it: the daemon's thread
    /// sends it before it stops.
    fn withdraw(&self) {
        let own = self
            .own
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(own) = own {
            let _ = self.daemon.unregister(&own);
        }
    }

    /// Every instance heard of for `app_id`; waits a little for one that has not been heard
    /// of yet (a peer that has just started).
    async fn instances(&self, app_id: &str) -> Vec<SocketAddr> {
        let deadline = tokio::time::Instant::now() + FIRST_SIGHT_WAIT;
        loop {
            let changed = self.heard.changed.notified();
            let found = self.heard.of(app_id);
            if !found.is_empty() {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Vec::new();
            }
        }
    }
}

impl Heard {
    fn apps(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(String, SocketAddr)>>> {
        self.apps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn of(&self, app_id: &str) -> Vec<SocketAddr> {
        self.apps()
            .get(app_id)
            .map(|v| v.iter().map(|(_, a)| *a).collect())
            .unwrap_or_default()
    }

    fn take(&self, event: ServiceEvent) {
        match event {
            ServiceEvent::ServiceResolved(service) => {
                let Some(app_id) = service.txt_properties.get_property_val_str("appid") else {
                    return;
                };
                // IPv4 first, as daprd prefers it.
                let ip = service
                    .addresses
                    .iter()
                    .map(mdns_sd::ScopedIp::to_ip_addr)
                    .min_by_key(IpAddr::is_ipv6);
                let Some(ip) = ip else { return };
                let addr = SocketAddr::new(ip, service.port);
                let mut apps = self.apps();
                for list in apps.values_mut() {
                    list.retain(|(name, _)| *name != service.fullname);
                }
                apps.entry(app_id.to_string())
                    .or_default()
                    .push((service.fullname.clone(), addr));
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                for list in self.apps().values_mut() {
                    list.retain(|(name, _)| *name != fullname);
                }
            }
            _ => return,
        }
        self.changed.notify_waiters();
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        self.withdraw();
        let _ = self.daemon.shutdown();
    }
}

/// DNS names, as daprd's Kubernetes resolver forms them.
struct Dns {
    namespace: String,
    cluster_domain: String,
    template: Option<String>,
    port: u16,
    cache: LookupCache<Vec<SocketAddr>>,
}

impl Dns {
    /// `host:port` for `app_id`: the template with `{{.ID}}`, `{{.Namespace}}` and
    /// `{{.Port}}` filled in (this sidecar's own port added when it names none), or the
    /// Kubernetes service name of the app's sidecar.
    fn address(&self, app_id: &str) -> String {
        match &self.template {
            Some(t) => {
                let filled = t
                    .replace("{{.ID}}", app_id)
                    .replace("{{.Namespace}}", &self.namespace)
                    .replace("{{.Port}}", &self.port.to_string());
                let port_given = |host_port: &str| {
                    host_port
                        .rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                };
                match filled.strip_prefix('[') {
                    // `[v6]:port`, or `[v6]` alone
                    Some(rest) if rest.contains("]:") && port_given(&filled) => filled,
                    Some(_) => format!("{filled}:{}", self.port),
                    // A bare IPv6 address has colons but no port.
                    None if filled.matches(':').count() > 1 => format!("[{filled}]:{}", self.port),
                    None if port_given(&filled) => filled,
                    None => format!("{filled}:{}", self.port),
                }
            }
            None => format!(
                "{app_id}-dapr.{}.svc.{}:{}",
                self.namespace, self.cluster_domain, self.port
            ),
        }
    }

    async fn lookup(&self, app_id: &str) -> Vec<SocketAddr> {
        if let Some(addrs) = self.cache.get(app_id) {
            return addrs;
        }
        let now = Instant::now();
        let found: Vec<SocketAddr> = match tokio::net::lookup_host(self.address(app_id)).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                tracing::debug!(app_id, error = %e, "DNS lookup failed");
                Vec::new()
            }
        };
        if !found.is_empty() {
            self.cache.put(app_id, found.clone(), now);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(template: Option<&str>) -> Dns {
        Dns {
            namespace: "prod".into(),
            cluster_domain: "cluster.local".into(),
            template: template.map(str::to_string),
            port: 50002,
            cache: LookupCache::new(DNS_CACHE, DNS_CACHE_CAP),
        }
    }

    #[test]
    fn dns_names_follow_kubernetes_or_the_template() {
        assert_eq!(
            dns(None).address("backend"),
            "backend-dapr.prod.svc.cluster.local:50002"
        );
        assert_eq!(
            dns(Some("{{.ID}}-dapr")).address("backend"),
            "backend-dapr:50002",
            "the caller's own port when the template names none"
        );
        assert_eq!(
            dns(Some("{{.ID}}.{{.Namespace}}.internal:{{.Port}}")).address("b"),
            "b.prod.internal:50002"
        );
        assert_eq!(dns(Some("{{.ID}}-dapr:7000")).address("b"), "b-dapr:7000");
        assert_eq!(dns(Some("fd00::1")).address("b"), "[fd00::1]:50002");
        assert_eq!(dns(Some("[fd00::1]")).address("b"), "[fd00::1]:50002");
        assert_eq!(dns(Some("[fd00::1]:7000")).address("b"), "[fd00::1]:7000");
    }

    #[test]
    fn only_plain_names_are_looked_up() {
        assert!(plain_name("backend") && plain_name("order_svc-2"));
        for bad in ["", "evil.example:80", "a/b", "-x", &"a".repeat(64)] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn instances_are_called_in_turn_and_failed_ones_passed_over() {
        let names = Names {
            resolver: Resolver::Dns(dns(None)),
            picks: Mutex::new(Picks::default()),
        };
        let a: SocketAddr = "10.0.0.1:50002".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:50002".parse().unwrap();
        // Two apps called alternately each still get both instances in turn.
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(names.pick("x", vec![a, b]).unwrap());
            names.pick("y", vec![b, a]).unwrap();
        }
        assert_eq!(got.iter().filter(|p| **p == a).count(), 2, "{got:?}");
        names.failed("x", a);
        assert!((0..4).all(|_| names.pick("x", vec![a, b]) == Some(b)));
        names.failed("x", b);
        assert!(
            names.pick("x", vec![a, b]).is_some(),
            "all passed over: tried anyway"
        );
        assert_eq!(names.pick("x", vec![]), None);
    }
}
