//! GPUs: NVML when the NVIDIA library is present, a fake list from config for tests, or none.

use river_proto::msg::{Gpu, GpuUsage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A GPU declared in the runner's config, for machines without GPUs (tests, demos).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeGpu {
    pub name: String,
    pub memory_bytes: u64,
    #[serde(default)]
    pub numa: Option<u32>,
}

#[derive(Clone)]
pub enum GpuSource {
    None,
    Nvml(Arc<nvml_wrapper::Nvml>),
    Fake(Vec<FakeGpu>),
}

impl std::fmt::Debug for GpuSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuSource::None => f.write_str("GpuSource::None"),
            GpuSource::Nvml(_) => f.write_str("GpuSource::Nvml"),
            GpuSource::Fake(g) => write!(f, "GpuSource::Fake({})", g.len()),
        }
    }
}

impl GpuSource {
    /// NVML if it loads, else no GPUs. Never an error: most machines have no NVIDIA library.
    pub fn detect() -> Self {
        match nvml_wrapper::Nvml::init() {
            Ok(n) => Self::Nvml(Arc::new(n)),
            Err(e) => {
                tracing::debug!("no NVIDIA GPUs: {e}");
                Self::None
            }
        }
    }

    pub fn list(&self) -> Vec<Gpu> {
        match self {
            GpuSource::None => Vec::new(),
            GpuSource::Fake(list) => list
                .iter()
                .enumerate()
                .map(|(i, g)| Gpu {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    name: g.name.clone(),
                    uuid: format!("FAKE-GPU-{i}"),
                    memory_bytes: g.memory_bytes,
                    numa: g.numa,
                })
                .collect(),
            GpuSource::Nvml(nvml) => nvml_list(nvml).unwrap_or_else(|e| {
                tracing::warn!("NVML could not list GPUs: {e}");
                Vec::new()
            }),
        }
    }

    pub fn usage(&self) -> Vec<GpuUsage> {
        match self {
            GpuSource::None | GpuSource::Fake(_) => Vec::new(),
            GpuSource::Nvml(nvml) => nvml_usage(nvml).unwrap_or_default(),
        }
    }
}

fn numa_of_pci(bus_id: &str) -> Option<u32> {
    // NVML prints an 8-digit domain; sysfs uses 4 digits and lower case.
    let id = bus_id.to_ascii_lowercase();
    let short = id.strip_prefix("0000").unwrap_or(&id);
    let text = std::fs::read_to_string(format!("/sys/bus/pci/devices/{short}/numa_node")).ok()?;
    u32::try_from(text.trim().parse::<i64>().ok()?).ok()
}

fn nvml_list(nvml: &nvml_wrapper::Nvml) -> Result<Vec<Gpu>, nvml_wrapper::error::NvmlError> {
    let n = nvml.device_count()?;
    (0..n)
        .map(|i| {
            let d = nvml.device_by_index(i)?;
            let numa = d.pci_info().ok().and_then(|p| numa_of_pci(&p.bus_id));
            Ok(Gpu {
                index: i,
                name: d.name()?,
                uuid: d.uuid()?,
                memory_bytes: d.memory_info()?.total,
                numa,
            })
        })
        .collect()
}

fn nvml_usage(nvml: &nvml_wrapper::Nvml) -> Result<Vec<GpuUsage>, nvml_wrapper::error::NvmlError> {
    let n = nvml.device_count()?;
    (0..n)
        .map(|i| {
            let d = nvml.device_by_index(i)?;
            Ok(GpuUsage {
                index: i,
                util_percent: d.utilization_rates().map(|u| u.gpu).unwrap_or(0),
                memory_used_bytes: d.memory_info()?.used,
                temperature_c: d
                    .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
                    .ok(),
            })
        })
        .collect()
}
