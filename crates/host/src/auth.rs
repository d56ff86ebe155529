//! Who is asking, and every rule about what they may do to what: the one place ownership and
//! roles are decided. Pure: no store, no I/O — callers fetch the records and ask here.

use crate::reply::{refused, HostError};
use river_proto::msg::{EnvView, ErrorKind, Role};
use river_store::{TaskRecord, UserRecord};

/// Who opened a stream, as far as authorization is concerned.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Node(String),
    User { name: String, role: river_proto::msg::Role },
}

impl Caller {
    pub fn actor(&self) -> String {
        match self {
            Caller::Node(n) => format!("node {n}"),
            Caller::User { name, .. } => format!("user {name}"),
        }
    }
}

/// Whether `caller` may act on task `t`: its owner, or an operator or admin.
pub(crate) fn may_touch(caller: &Caller, t: &TaskRecord) -> bool {
    match caller {
        Caller::User { role, .. } => *role >= Role::Operator || caller.actor() == t.owner,
        Caller::Node(_) => false,
    }
}

/// Whether a caller with role `by`, named `me`, may manage `target`, giving them `new_role` when
/// that is the change: never their own account (an admin could lock the cluster out), never
/// someone of a role above operator unless an admin, never a role above their own.
pub(crate) fn may_manage(me: &str, by: Role, target: &UserRecord, new_role: Option<Role>) -> Result<(), String> {
    if target.name == me {
        return Err("you cannot change your own account; ask another admin".into());
    }
    if by < Role::Admin && target.role >= Role::Operator {
        return Err(format!(
            "{} is an {}; only an admin may change that account",
            target.name,
            target.role.as_str()
        ));
    }
    if let Some(role) = new_role {
        if role > by || (role >= Role::Operator && by < Role::Admin) {
            return Err(format!(
                "making someone {} needs the admin role; you are {}",
                role.as_str(),
                by.as_str()
            ));
        }
    }
    Ok(())
}

/// Why `caller` may not change `env` (edit, commit, remove), if they may not: only its owner and
/// operators may — and only operators one the cluster owns (`cluster_owned`: the `default` every
/// task runs without an image).
pub(crate) fn env_not_theirs(caller: &Caller, env: &EnvView, cluster_owned: bool) -> Option<HostError> {
    let operator = matches!(caller, Caller::User { role, .. } if *role >= Role::Operator);
    if operator || env.owner == caller.actor() {
        return None;
    }
    let whose = if cluster_owned {
        "the cluster's: only operators may change it".to_owned()
    } else {
        format!("{}'s: only they or an operator may change it", env.owner)
    };
    Some(refused(
        ErrorKind::Forbidden,
        format!(
            "environment {} is {whose}; make one of your own with `river env create NAME --from IMAGE`",
            env.name
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role) -> UserRecord {
        UserRecord {
            name: name.into(),
            role,
            created_at: 0,
            disabled: false,
            removed_at: None,
        }
    }

    #[test]
    fn a_user_touches_their_own_tasks_an_operator_any_a_node_none() {
        let t = TaskRecord {
            id: 1,
            batch: 1,
            name: None,
            owner: "user bob".into(),
            spec: river_proto::msg::TaskSpec::new("img", vec![]),
            assigned: Default::default(),
            target: None,
            state: river_task::state::TaskState::Running,
            placement: None,
            exit_code: None,
            message: None,
            submitted_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
        };
        let as_user = |name: &str, role| Caller::User {
            name: name.into(),
            role,
        };
        assert!(may_touch(&as_user("bob", Role::User), &t));
        assert!(!may_touch(&as_user("eve", Role::User), &t));
        assert!(!may_touch(&as_user("bobby", Role::User), &t));
        assert!(!may_touch(&as_user("vic", Role::Viewer), &t));
        assert!(may_touch(&as_user("opal", Role::Operator), &t));
        assert!(!may_touch(&Caller::Node("bob".into()), &t));
    }

    #[test]
    fn operators_manage_viewers_and_users_and_no_one_rises_above_the_manager() {
        let bob = user("bob", Role::User);
        let opal = user("opal", Role::Operator);
        let root = user("admin", Role::Admin);
        // An operator: users and viewers, up to user.
        assert!(may_manage("opal", Role::Operator, &bob, None).is_ok());
        assert!(may_manage("opal", Role::Operator, &bob, Some(Role::Viewer)).is_ok());
        assert!(may_manage("opal", Role::Operator, &bob, Some(Role::Operator)).is_err());
        assert!(may_manage("opal", Role::Operator, &bob, Some(Role::Admin)).is_err());
        assert!(may_manage("opal", Role::Operator, &root, None).is_err());
        assert!(may_manage("opal2", Role::Operator, &opal, Some(Role::User)).is_err());
        // An admin: anyone, any role, but not themselves.
        assert!(may_manage("admin", Role::Admin, &opal, Some(Role::Admin)).is_ok());
        assert!(may_manage("admin", Role::Admin, &user("admin2", Role::Admin), Some(Role::User)).is_ok());
        assert!(may_manage("admin", Role::Admin, &root, Some(Role::User)).is_err());
        assert!(may_manage("opal", Role::Operator, &opal, None).is_err());
    }
}
