//! A request's name, for logs: what was asked, never with what.

use super::Request;

impl Request {
    /// The request's kind (`TaskSubmit`, `UserInvite`, …), without any of its contents: what the
    /// host logs about a request, which may carry passwords in a task's variables.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::WhoAmI => "WhoAmI",
            Request::Status => "Status",
            Request::NodeList => "NodeList",
            Request::NodeShow { .. } => "NodeShow",
            Request::NodeUsage { .. } => "NodeUsage",
            Request::WebLink => "WebLink",
            Request::WebSessions { .. } => "WebSessions",
            Request::WebSessionRevoke { .. } => "WebSessionRevoke",
            Request::TaskHistory { .. } => "TaskHistory",
            Request::VpsShares { .. } => "VpsShares",
            Request::NodeRemove { .. } => "NodeRemove",
            Request::TokenCreate { .. } => "TokenCreate",
            Request::TokenList => "TokenList",
            Request::TokenRevoke { .. } => "TokenRevoke",
            Request::UserInvite { .. } => "UserInvite",
            Request::UserList => "UserList",
            Request::Renew { .. } => "Renew",
            Request::TaskSubmit(_) => "TaskSubmit",
            Request::TaskList { .. } => "TaskList",
            Request::TaskShow { .. } => "TaskShow",
            Request::TaskWait { .. } => "TaskWait",
            Request::TaskSignal { .. } => "TaskSignal",
            Request::TaskLogs { .. } => "TaskLogs",
            Request::EnvCreate { .. } => "EnvCreate",
            Request::EnvList => "EnvList",
            Request::EnvRm { .. } => "EnvRm",
            Request::EnvShell { .. } => "EnvShell",
            Request::EnvCommit { .. } => "EnvCommit",
            Request::IpReserve { .. } => "IpReserve",
            Request::IpList => "IpList",
            Request::IpRelease { .. } => "IpRelease",
            Request::Overlay => "Overlay",
            Request::VpsStart { .. } => "VpsStart",
            Request::VpsSnapshot { .. } => "VpsSnapshot",
            Request::VpsSnapshots { .. } => "VpsSnapshots",
            Request::VpsSnapshotRm { .. } => "VpsSnapshotRm",
            Request::VpsRestore { .. } => "VpsRestore",
            Request::UserKeyAdd { .. } => "UserKeyAdd",
            Request::UserKeys => "UserKeys",
            Request::UserKeyRm { .. } => "UserKeyRm",
            Request::VpsRemove { .. } => "VpsRemove",
            Request::VpsKeys { .. } => "VpsKeys",
            Request::NodeAdmit { .. } => "NodeAdmit",
            Request::UserReissue { .. } => "UserReissue",
            Request::UserRemove { .. } => "UserRemove",
            Request::UserSetRole { .. } => "UserSetRole",
            Request::UserEnable { .. } => "UserEnable",
            Request::Audit { .. } => "Audit",
            Request::VpsShare { .. } => "VpsShare",
            Request::Logout { .. } => "Logout",
            Request::ApiTokenCreate { .. } => "ApiTokenCreate",
            Request::ApiTokenList { .. } => "ApiTokenList",
            Request::ApiTokenRevoke { .. } => "ApiTokenRevoke",
            Request::TaskApprove { .. } => "TaskApprove",
            Request::TaskReject { .. } => "TaskReject",
            Request::UserLimits { .. } => "UserLimits",
            Request::Progress { .. } => "Progress",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_the_variants_name_and_nothing_of_its_contents() {
        let mut spec = crate::msg::TaskSpec::new("img", vec!["true".into()]);
        spec.env = vec![("PASSWORD".into(), "hunter2".into())].into();
        let req = Request::TaskSubmit(spec);
        assert_eq!(req.kind(), "TaskSubmit");
        assert!(format!("{req:?}").starts_with(req.kind()));
        assert_eq!(Request::WhoAmI.kind(), "WhoAmI");
    }
}
