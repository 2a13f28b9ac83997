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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

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

pub struct Names {
    resolver: Resolver,
    /// Instances that failed a call, and until when they are passed over.
    down: Mutex<HashMap<SocketAddr, Instant>>,
    next: AtomicUsize,
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
    ) -> Result<Names, mdns_sd::Error> {
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
                cache: Mutex::new(HashMap::new()),
            }),
        };
        Ok(Names {
            resolver,
            down: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        })
    }

    /// One live instance of `app_id`, in turn; `None` when there is none.
    pub async fn resolve(&self, app_id: &str) -> Option<SocketAddr> {
        let all = match &self.resolver {
            Resolver::Registry(r) => {
                return r
                    .resolve(app_id)
                    .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            }
            Resolver::Mdns(m) => m.instances(app_id).await,
            Resolver::Dns(d) => d.lookup(app_id).await,
        };
        self.pick(&all)
    }

    fn pick(&self, all: &[SocketAddr]) -> Option<SocketAddr> {
        let now = Instant::now();
        let up: Vec<SocketAddr> = {
            let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
            down.retain(|_, until| *until > now);
            all.iter()
                .filter(|a| !down.contains_key(a))
                .copied()
                .collect()
        };
        let from = if up.is_empty() { all } else { &up };
        match from.len() {
            0 => None,
            n => Some(from[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    /// A call to `addr` for `app_id` could not connect, or went unanswered: pass it over.
    pub fn failed(&self, app_id: &str, addr: SocketAddr) {
        match &self.resolver {
            Resolver::Registry(r) => r.forget(app_id),
            Resolver::Mdns(_) | Resolver::Dns(_) => {
                self.down
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(addr, Instant::now() + DOWN_FOR);
                if let Resolver::Dns(d) = &self.resolver {
                    d.forget(app_id);
                }
            }
        }
    }
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
    own: String,
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
        let own_name = info.get_fullname().to_string();
        daemon.register(info)?;
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
            own: own_name,
            heard,
        })
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
    /// Says goodbye, so that peers drop this instance at once.
    fn drop(&mut self) {
        if let Ok(done) = self.daemon.unregister(&self.own) {
            let _ = done.recv_timeout(Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}

/// DNS names, as daprd's Kubernetes resolver forms them.
struct Dns {
    namespace: String,
    cluster_domain: String,
    template: Option<String>,
    port: u16,
    cache: Mutex<HashMap<String, (Vec<SocketAddr>, Instant)>>,
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
                if filled
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                {
                    filled
                } else {
                    format!("{filled}:{}", self.port)
                }
            }
            None => format!(
                "{app_id}-dapr.{}.svc.{}:{}",
                self.namespace, self.cluster_domain, self.port
            ),
        }
    }

    async fn lookup(&self, app_id: &str) -> Vec<SocketAddr> {
        let now = Instant::now();
        if let Some((addrs, at)) = self.cache().get(app_id)
            && now.duration_since(*at) < DNS_CACHE
        {
            return addrs.clone();
        }
        let found: Vec<SocketAddr> = match tokio::net::lookup_host(self.address(app_id)).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                tracing::debug!(app_id, error = %e, "DNS lookup failed");
                Vec::new()
            }
        };
        if !found.is_empty() {
            self.cache()
                .insert(app_id.to_string(), (found.clone(), now));
        }
        found
    }

    fn forget(&self, app_id: &str) {
        self.cache().remove(app_id);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<SocketAddr>, Instant)>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
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
            cache: Mutex::new(HashMap::new()),
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
    }

    #[test]
    fn instances_are_called_in_turn_and_failed_ones_passed_over() {
        let names = Names {
            resolver: Resolver::Dns(dns(None)),
            down: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        };
        let a: SocketAddr = "10.0.0.1:50002".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:50002".parse().unwrap();
        let picks: Vec<_> = (0..4).map(|_| names.pick(&[a, b]).unwrap()).collect();
        assert_eq!(picks.iter().filter(|p| **p == a).count(), 2, "{picks:?}");
        names.failed("backend", a);
        assert!((0..4).all(|_| names.pick(&[a, b]) == Some(b)));
        names.failed("backend", b);
        assert!(
            names.pick(&[a, b]).is_some(),
            "all passed over: tried anyway"
        );
        assert_eq!(names.pick(&[]), None);
    }
}
