//! What the host keeps as archives: environments and their versions, VPS snapshots.

use super::ArchiveRef;
use serde::{Deserialize, Serialize};

/// The repository of snapshot images (`river-vps/ID:MS`): a node drops one of these once no
/// container of it is left, since the host keeps the archive.
pub const VPS_SNAPSHOT_REPO: &str = "river-vps";

/// A saved disk state of a VPS: its container committed to an image, kept by the host as an
/// archive (so any node can start the VPS from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpsSnapshot {
    pub vps: u64,
    /// 1, 2, … per VPS, never reused.
    pub seq: u32,
    pub image: String,
    pub archive: ArchiveRef,
    /// The node it was taken on.
    pub node: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub message: Option<String>,
    /// Taken when the VPS stopped (the oldest automatic ones are dropped past the host's limit).
    pub auto: bool,
}

/// An environment and its versions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvView {
    pub name: String,
    pub owner: String,
    pub created_at_ms: i64,
    pub versions: Vec<EnvVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVersion {
    pub version: u32,
    /// What tasks see as their image: `river-env/NAME:vN`, or a registry reference for a version
    /// that points at one (the default environment before anyone commits to it).
    pub image: String,
    /// The archive the host keeps, absent for a registry reference.
    pub archive: Option<ArchiveRef>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub message: Option<String>,
    /// How many times nodes fetched this version's archive in full.
    pub fetches: u64,
}
