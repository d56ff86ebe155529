//! What a submission asks to run, typed: the kind of work (a container, a process on the node, a
//! VPS — a virtual machine next), its network, and its shape (one task, an array over targets, a
//! distributed group). [`parse`] is the one place a submission's combinations are judged: every
//! combination that cannot run is refused here, with the sentence the user reads, before
//! anything about the cluster is looked at. What depends on the cluster (is the overlay on, is
//! there room) is the host's to judge after.

use river_proto::msg::TaskSpec;

/// Largest group one submission may ask for.
pub const MAX_MEMBERS: u32 = 1024;

/// The kind of work, which decides how a node runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A command in a container from an image or environment.
    Container,
    /// A command as a process on the node itself (`--no-container`).
    Process,
    /// A long-lived container whose disk is kept when it stops.
    Vps,
}

impl Kind {
    /// The kind of an accepted spec (one that [`parse`] let through).
    pub fn of(spec: &TaskSpec) -> Self {
        if spec.vps.is_some() {
            Self::Vps
        } else if spec.no_container {
            Self::Process
        } else {
            Self::Container
        }
    }
}

/// Which network the work's ports are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Its own, isolated from other users' work (or the node's, for a process).
    Bridge,
    /// The cluster's overlay, with an address of its own.
    Overlay,
}

/// How many tasks one submission makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    One,
    /// One task per target.
    Array(usize),
    /// This many members, one per node, started together and ended together.
    Group(u32),
}

/// A submission as it will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub kind: Kind,
    pub network: Network,
    pub shape: Shape,
}

/// The submission's workload, or why it can never run as asked.
pub fn parse(spec: &TaskSpec) -> Result<Workload, String> {
    let kind = Kind::of(spec);
    let grouped = spec.nodes.is_some() || spec.group;
    if let Some(vps) = &spec.vps {
        if spec.no_container {
            return Err("a VPS is a container; --no-container does not apply".into());
        }
        if grouped || spec.targets.len() > 1 {
            return Err(
                "a VPS runs on one node: give at most one target (for several machines, create several VPSs)".into(),
            );
        }
        if vps.ssh_keys.is_empty() && !vps.image_sshd {
            return Err("a VPS needs an SSH public key to let you in: --ssh-key FILE (the default, ~/.ssh/id_ed25519.pub or id_rsa.pub, was not found)".into());
        }
    } else if spec.command.is_empty() {
        return Err("no command given; put it after `--`, e.g. river task submit -- python train.py".into());
    }
    if kind == Kind::Process {
        if !spec.image.trim().is_empty() || spec.environment.is_some() {
            return Err("--no-container runs the command on the node itself; drop --image and --env".into());
        }
        if !spec.mounts.is_empty() {
            return Err("--no-container tasks see the node's own files; --mount does not apply (RIVER_SHARED and RIVER_SCRATCH name the shared and scratch directories)".into());
        }
    }
    let network = match spec.network.as_deref() {
        None if grouped => Network::Overlay,
        None | Some("bridge") => Network::Bridge,
        Some("overlay") => Network::Overlay,
        Some(other) => return Err(format!("--network {other}: the networks are `overlay` and `bridge`")),
    };
    if network == Network::Overlay && kind == Kind::Process && !grouped {
        return Err("--no-container tasks share the node's own network; --network does not apply".into());
    }
    let shape = if grouped {
        if kind == Kind::Process || network == Network::Bridge {
            return Err("group members run in containers on the overlay network".into());
        }
        if spec.ip_token.is_some() {
            return Err("a group reserves its members' addresses itself; drop --ip-token".into());
        }
        let n = spec
            .nodes
            .unwrap_or(u32::try_from(spec.targets.len()).unwrap_or(u32::MAX));
        if n == 0 || n > MAX_MEMBERS {
            return Err(format!("--nodes must be between 1 and {MAX_MEMBERS}"));
        }
        if !spec.targets.is_empty() && spec.targets.len() != n as usize {
            return Err(format!(
                "--nodes {n} with {} targets: give one target per node, or none",
                spec.targets.len()
            ));
        }
        Shape::Group(n)
    } else if spec.targets.len() > 1 {
        Shape::Array(spec.targets.len())
    } else {
        Shape::One
    };
    Ok(Workload { kind, network, shape })
}

#[cfg(test)]
mod tests {
    use super::*;
    use river_proto::msg::{MountSpec, VpsSpec};

    fn spec() -> TaskSpec {
        TaskSpec::new("img", vec!["train".into()])
    }

    fn process() -> TaskSpec {
        let mut s = spec();
        s.image = String::new();
        s.no_container = true;
        s
    }

    fn vps() -> TaskSpec {
        let mut s = spec();
        s.command.clear();
        s.vps = Some(VpsSpec {
            ssh_keys: vec!["ssh-ed25519 AAAA k".into()],
            image_sshd: false,
            generation: 0,
        });
        s
    }

    fn refused(s: &TaskSpec) -> String {
        parse(s).expect_err("refused")
    }

    #[test]
    fn each_kind_network_and_shape_is_read() {
        let w = parse(&spec()).unwrap();
        assert_eq!(
            (w.kind, w.network, w.shape),
            (Kind::Container, Network::Bridge, Shape::One)
        );
        assert_eq!(parse(&process()).unwrap().kind, Kind::Process);
        assert_eq!(parse(&vps()).unwrap().kind, Kind::Vps);
        let mut a = spec();
        a.targets = vec!["n1".into(), "n2".into()];
        assert_eq!(parse(&a).unwrap().shape, Shape::Array(2));
        let mut g = spec();
        g.nodes = Some(4);
        let w = parse(&g).unwrap();
        assert_eq!((w.network, w.shape), (Network::Overlay, Shape::Group(4)));
        let mut o = spec();
        o.network = Some("overlay".into());
        assert_eq!(parse(&o).unwrap().network, Network::Overlay);
    }

    #[test]
    fn every_combination_that_cannot_run_is_refused_with_its_reason() {
        let mut s = spec();
        s.command.clear();
        assert!(refused(&s).starts_with("no command given"));

        let mut s = vps();
        s.no_container = true;
        assert!(refused(&s).contains("a VPS is a container"));
        let mut s = vps();
        s.nodes = Some(2);
        assert!(refused(&s).contains("a VPS runs on one node"));
        let mut s = vps();
        s.targets = vec!["a".into(), "b".into()];
        assert!(refused(&s).contains("a VPS runs on one node"));
        let mut s = vps();
        s.vps.as_mut().unwrap().ssh_keys.clear();
        assert!(refused(&s).contains("needs an SSH public key"));

        let mut s = process();
        s.image = "img".into();
        assert!(refused(&s).contains("drop --image and --env"));
        let mut s = process();
        s.mounts = vec![MountSpec {
            source: "/data".into(),
            target: "/data".into(),
            read_only: true,
        }];
        assert!(refused(&s).contains("--mount does not apply"));
        let mut s = process();
        s.network = Some("overlay".into());
        assert!(refused(&s).contains("--network does not apply"));

        let mut s = spec();
        s.network = Some("host".into());
        assert_eq!(refused(&s), "--network host: the networks are `overlay` and `bridge`");

        let mut s = process();
        s.group = true;
        s.targets = vec!["a".into(), "b".into()];
        assert!(refused(&s).contains("group members run in containers on the overlay network"));
        let mut s = spec();
        s.nodes = Some(2);
        s.network = Some("bridge".into());
        assert!(refused(&s).contains("group members run in containers"));
        let mut s = spec();
        s.nodes = Some(2);
        s.ip_token = Some(river_proto::msg::Secret("t".into()));
        assert!(refused(&s).contains("drop --ip-token"));
        let mut s = spec();
        s.nodes = Some(0);
        assert!(refused(&s).contains("--nodes must be between 1 and 1024"));
        let mut s = spec();
        s.nodes = Some(2);
        s.targets = vec!["a".into()];
        assert!(refused(&s).contains("--nodes 2 with 1 targets"));
    }
}
