//! Networks: the overlay's bridge network and the isolated network tasks run on.

use crate::{docker_err, BridgeNetwork, Result, Runtime, RuntimeError};
use std::collections::HashMap;

impl Runtime {
    /// Makes sure the engine has `net`: created if missing; recreated if it differs and no
    /// container uses it; an error saying so if containers hold the old one. Returns whether it
    /// was created.
    pub async fn ensure_network(&self, net: &BridgeNetwork) -> Result<bool> {
        let options = HashMap::from([
            ("com.docker.network.bridge.name".to_owned(), net.bridge.clone()),
            ("com.docker.network.driver.mtu".to_owned(), net.mtu.to_string()),
            // The node masquerades only traffic leaving the overlay (river's own rule):
            // between containers, addresses are kept.
            (
                "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
                "false".to_owned(),
            ),
        ]);
        match self.docker.inspect_network(&net.name, None).await {
            Ok(have) => {
                let cfg = have.ipam.and_then(|i| i.config).unwrap_or_default();
                let same_subnet = cfg.iter().any(|c| c.subnet.as_deref() == Some(net.subnet.as_str()));
                let same_bridge = have
                    .options
                    .as_ref()
                    .and_then(|o| o.get("com.docker.network.bridge.name"))
                    == Some(&net.bridge);
                let same_mtu = have
                    .options
                    .as_ref()
                    .and_then(|o| o.get("com.docker.network.driver.mtu"))
                    == Some(&net.mtu.to_string());
                if same_subnet && same_bridge && same_mtu {
                    return Ok(false);
                }
                if have.containers.is_some_and(|c| !c.is_empty()) {
                    return Err(RuntimeError::Docker(format!(
                        "network {} has other settings than the overlay needs ({}) and containers still use it",
                        net.name, net.subnet
                    )));
                }
                self.docker.remove_network(&net.name).await.map_err(docker_err)?;
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(e) => return Err(docker_err(e)),
        }
        let req = bollard::models::NetworkCreateRequest {
            name: net.name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some(net.subnet.clone()),
                    gateway: Some(net.gateway.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            options: Some(options),
            ..Default::default()
        };
        self.docker.create_network(req).await.map_err(docker_err)?;
        Ok(true)
    }

    /// Makes sure the bridge network `name` exists with traffic between its containers off
    /// (`enable_icc=false`), and returns its id, by which containers join it. The engine accepts
    /// two networks of one name made at the same moment (by two processes sharing it), and then
    /// refuses every container that names it as ambiguous: every caller settles on the one with
    /// the smallest id and removes the others when nothing uses them.
    pub async fn ensure_isolated_network(&self, name: &str) -> Result<String> {
        const ICC: &str = "com.docker.network.bridge.enable_icc";
        // Runners sharing an engine in one process make it one at a time.
        static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = MAKING.lock().await;
        let mut found = self.networks_named(name).await?;
        if found.is_empty() {
            let req = bollard::models::NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".into()),
                options: Some(HashMap::from([(ICC.to_owned(), "false".to_owned())])),
                ..Default::default()
            };
            self.docker.create_network(req).await.map_err(docker_err)?;
            found = self.networks_named(name).await?;
        }
        found.sort();
        // The one to keep: one that containers use already (the engine stores a container's
        // network by name, so it could not start again while the name is ambiguous, and a network
        // in use cannot be removed), else the smallest id, which every caller agrees on.
        let mut keep = None;
        if found.len() > 1 {
            for id in &found {
                let used = self
                    .docker
                    .inspect_network(id, None)
                    .await
                    .ok()
                    .and_then(|n| n.containers)
                    .is_some_and(|c| !c.is_empty());
                if used {
                    keep = Some(id.clone());
                    break;
                }
            }
        }
        let Some(keep) = keep.or_else(|| found.first().cloned()) else {
            return Err(RuntimeError::Docker(format!(
                "network {name} was made but is not there"
            )));
        };
        for other in found.iter().filter(|id| **id != keep) {
            // Refused while a container uses it; a later call tries again.
            let _ = self.docker.remove_network(other).await;
        }
        let have = self.docker.inspect_network(&keep, None).await.map_err(docker_err)?;
        let icc = have.options.as_ref().and_then(|o| o.get(ICC)).map(String::as_str);
        if icc != Some("false") {
            return Err(RuntimeError::Docker(format!(
                "network {name} lets containers reach each other; remove it (`docker network rm {name}`) and river makes it again"
            )));
        }
        Ok(keep)
    }
}
