//! Host configuration: a TOML file, every field optional with the defaults below.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The port river uses by default, for the mesh (UDP) and the HTTPS API (TCP) alike.
pub const DEFAULT_PORT: u16 = 7443;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Where the CA, the host's keys and the database live.
    pub state_dir: PathBuf,
    /// Address of the mesh (QUIC over UDP) and the HTTPS API (TCP).
    pub listen: SocketAddr,
    /// Names or IPs (optionally with a port) that runners and users use to reach the host; they
    /// go into the host certificate for HTTPS clients. The first is written into credentials.
    pub advertise: Vec<String>,
    /// How often runners send heartbeats.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node with no heartbeat for this long is offline.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
    /// Lifetime of node certificates; runners renew at 70%.
    #[serde(with = "humantime_serde")]
    pub node_cert_lifetime: Duration,
    /// Lifetime of user certificates; the CLI renews at 70% when used.
    #[serde(with = "humantime_serde")]
    pub user_cert_lifetime: Duration,
    /// Longest time a join token or invite may be valid.
    #[serde(with = "humantime_serde")]
    pub max_token_ttl: Duration,
    /// Whether operators may run privileged tasks (full access to the node). Off by default.
    pub allow_privileged: bool,
    /// The most tasks one user may have waiting in the queue; a submission over it is refused
    /// with the reason. 0: no limit.
    pub max_queued_per_user: u32,
    /// Roles whose submissions wait in `pending_approval` until an operator approves them
    /// (`river task approve ID`) or rejects them. Default: none.
    pub approval_roles: Vec<String>,
    /// Per-user limits on what runs at once and what is kept (0: no limit); `river user limits`
    /// overrides them for one user.
    pub limits: LimitSettings,
    /// The image of the `default` environment (version 1), created at first start: what a task
    /// asking for neither `--env` nor `--image` runs in. Nodes pull it from its registry; commit
    /// a version (`river env shell default`, `river env commit default`) to serve it over the mesh.
    pub default_image: String,
    /// The overlay network between containers on different nodes (off by default).
    pub overlay: OverlaySettings,
    /// VPS snapshots.
    pub vps: VpsSettings,
    /// The dashboard at an address of the host's own, with the lab's certificate (off unless
    /// `listen` is set; `river ui` serves it on each user's machine either way).
    pub web: WebSettings,
}

/// `[web]` in the host config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSettings {
    /// Where to serve the dashboard over HTTPS (`0.0.0.0:443`); unset: not served.
    pub listen: Option<SocketAddr>,
    /// The certificate chain (PEM) and its private key (PEM) the browser sees, e.g. from the
    /// lab's CA or Let's Encrypt. Read again when the files change.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The address people open, as login links name it (`https://river.lab.example`); default:
    /// `https://` and the first `advertise` name with the port of `listen`.
    pub url: Option<String>,
    /// How long a browser stays logged in after it used a link.
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            listen: None,
            cert: None,
            key: None,
            url: None,
            session_lifetime: Duration::from_secs(7 * 86_400),
        }
    }
}

/// `[limits]` in the host config: each user's defaults, 0 meaning no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Cores one user's tasks may hold at once; more wait in the queue (others go first).
    pub running_cores: u32,
    /// GPUs one user's tasks may hold at once.
    pub running_gpus: u32,
    /// VPSs one user may have (not removed); another is refused at submit.
    pub vps: u32,
    /// MiB of archives the host keeps for one user: environment versions they make and their
    /// VPSs' snapshots. A commit or snapshot past it is refused (an automatic one is skipped).
    pub archive_mib: u32,
}

/// `[vps]` in the host config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VpsSettings {
    /// Snapshots taken automatically when a VPS stops, kept per VPS (the oldest go first); 0
    /// turns them off. Snapshots taken by hand are kept until removed.
    pub auto_snapshots: u32,
}

impl Default for VpsSettings {
    fn default() -> Self {
        Self { auto_snapshots: 3 }
    }
}

/// `[overlay]` in the host config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverlaySettings {
    pub enabled: bool,
    /// The range every member's subnet is cut from. Changing it once nodes hold subnets is
    /// refused: their containers' addresses would change under them.
    pub range: String,
    /// Size of each member's subnet: `/24` gives 253 containers per node and, in the default
    /// range, 4095 runners.
    pub node_prefix: u8,
    /// VXLAN network identifier and UDP port (the IANA port by default).
    pub vni: u32,
    pub port: u16,
    /// MTU inside the overlay; default: each member's underlay MTU less 50 bytes of VXLAN.
    pub mtu: Option<u32>,
    /// The host's own underlay address (where runners send its VXLAN packets); default: the
    /// `listen` address, or the first `advertise` entry that is an IPv4 address.
    pub address: Option<std::net::Ipv4Addr>,
}

impl Default for OverlaySettings {
    fn default() -> Self {
        Self {
            enabled: false,
            range: "10.128.0.0/12".into(),
            node_prefix: 24,
            vni: 4242,
            port: 4789,
            mtu: None,
            address: None,
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/river/host".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            advertise: Vec::new(),
            heartbeat_interval: Duration::from_secs(5),
            offline_after: Duration::from_secs(30),
            node_cert_lifetime: Duration::from_secs(30 * 86_400),
            user_cert_lifetime: Duration::from_secs(7 * 86_400),
            max_token_ttl: Duration::from_secs(30 * 86_400),
            allow_privileged: false,
            max_queued_per_user: 10_000,
            approval_roles: Vec::new(),
            limits: LimitSettings::default(),
            default_image: "python:3.12-slim".into(),
            overlay: OverlaySettings::default(),
            vps: VpsSettings::default(),
            web: WebSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("config: {0}")]
    Invalid(String),
}

impl HostConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Invalid("heartbeat_interval must be more than 0".into()));
        }
        if self.offline_after <= self.heartbeat_interval {
            return Err(ConfigError::Invalid(format!(
                "offline_after ({:?}) must be longer than heartbeat_interval ({:?}), or every node flaps offline",
                self.offline_after, self.heartbeat_interval
            )));
        }
        if self.overlay.enabled {
            let range: river_overlay::Ipv4Net = self
                .overlay
                .range
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("overlay.range: {e}")))?;
            let p = self.overlay.node_prefix;
            if p <= range.prefix() || p > 29 {
                return Err(ConfigError::Invalid(format!(
                    "overlay.node_prefix must be longer than the range's /{} and at most /29; got /{p}",
                    range.prefix()
                )));
            }
            if self.overlay.vni == 0 || self.overlay.vni >= 1 << 24 {
                return Err(ConfigError::Invalid(
                    "overlay.vni must be between 1 and 16777215".into(),
                ));
            }
            if self.overlay.mtu.is_some_and(|m| !(576..=9000).contains(&m)) {
                return Err(ConfigError::Invalid("overlay.mtu must be between 576 and 9000".into()));
            }
        }
        for r in &self.approval_roles {
            r.parse::<river_proto::msg::Role>()
                .map_err(|e| ConfigError::Invalid(format!("approval_roles: {e}")))?;
        }
        if self.web.listen.is_some() && (self.web.cert.is_none() || self.web.key.is_none()) {
            return Err(ConfigError::Invalid(
                "web.listen needs web.cert and web.key: the lab's certificate and key files (PEM) for that address"
                    .into(),
            ));
        }
        if let Some(url) = &self.web.url {
            if !url.starts_with("https://") || url.trim_end_matches('/').len() <= "https://".len() {
                return Err(ConfigError::Invalid(format!(
                    "web.url must be the https:// address people open (https://river.lab.example); got {url:?}"
                )));
            }
        }
        if self.web.session_lifetime < Duration::from_secs(1) {
            return Err(ConfigError::Invalid("web.session_lifetime must be at least 1s".into()));
        }
        if self.node_cert_lifetime < Duration::from_secs(10) || self.user_cert_lifetime < Duration::from_secs(10) {
            return Err(ConfigError::Invalid(
                "certificate lifetimes must be at least 10s".into(),
            ));
        }
        Ok(())
    }

    /// Whether a submission by someone of `role` waits for an operator's approval.
    pub(crate) fn needs_approval(&self, role: river_proto::msg::Role) -> bool {
        self.approval_roles.iter().any(|r| r == role.as_str())
    }

    pub(crate) fn liveness(&self) -> river_proto::liveness::LivenessPolicy {
        river_proto::liveness::LivenessPolicy {
            heartbeat_interval_ms: u64::try_from(self.heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
            offline_after_ms: u64::try_from(self.offline_after.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_keep_defaults_and_unknown_keys_are_refused() {
        let c: HostConfig = toml::from_str("offline_after = \"12s\"\n").unwrap();
        assert_eq!(c.offline_after, Duration::from_secs(12));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
        assert!(toml::from_str::<HostConfig>("ofline_after = \"12s\"\n").is_err());
    }

    #[test]
    fn overlay_settings_are_checked_only_when_on() {
        let on = |extra: &str| toml::from_str::<HostConfig>(&format!("[overlay]\nenabled = true\n{extra}")).unwrap();
        on("").validate().unwrap();
        assert!(on("range = \"10.128.0.1/12\"")
            .validate()
            .unwrap_err()
            .to_string()
            .contains("host bits"));
        assert!(on("node_prefix = 12")
            .validate()
            .unwrap_err()
            .to_string()
            .contains("node_prefix"));
        assert!(on("vni = 0").validate().is_err());
        assert!(on("mtu = 100").validate().is_err());
        let off: HostConfig = toml::from_str("[overlay]\nrange = \"nonsense\"\n").unwrap();
        off.validate().unwrap();
        assert!(toml::from_str::<HostConfig>("[overlay]\nenable = true\n").is_err());
    }

    #[test]
    fn approval_roles_are_role_names() {
        let c: HostConfig = toml::from_str("approval_roles = [\"user\"]\n").unwrap();
        c.validate().unwrap();
        assert!(c.needs_approval(river_proto::msg::Role::User));
        assert!(!c.needs_approval(river_proto::msg::Role::Operator));
        let bad: HostConfig = toml::from_str("approval_roles = [\"guest\"]\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("unknown role"));
        assert!(!HostConfig::default().needs_approval(river_proto::msg::Role::Viewer));
    }

    #[test]
    fn the_web_address_needs_its_certificate() {
        let c = |text: &str| toml::from_str::<HostConfig>(text).unwrap().validate();
        c("[web]\nlisten = \"0.0.0.0:443\"\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n").unwrap();
        assert!(c("[web]\nlisten = \"0.0.0.0:443\"\n")
            .unwrap_err()
            .to_string()
            .contains("web.cert and web.key"));
        assert!(c("[web]\nurl = \"http://lab\"\n")
            .unwrap_err()
            .to_string()
            .contains("https://"));
        assert_eq!(HostConfig::default().web.listen, None);
    }

    #[test]
    fn offline_must_outlast_the_heartbeat() {
        let c = HostConfig {
            offline_after: Duration::from_secs(5),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("flaps"));
        HostConfig::default().validate().unwrap();
    }
}
