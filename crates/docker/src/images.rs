//! Images: present, pulled, tagged, committed from a container, saved to and loaded from an
//! archive, removed.

use crate::{docker_err, split_ref, Result, Runtime, RuntimeError};
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::path::Path;

impl Runtime {
    pub async fn image_present(&self, image: &str) -> Result<bool> {
        Ok(self.inspect_image(image).await?.is_some())
    }

    /// Pulls an image from its registry, for nodes that can reach one.
    pub async fn pull(&self, image: &str) -> Result<()> {
        let (name, tag) = split_ref(image);
        let opts = bollard::query_parameters::CreateImageOptions {
            from_image: Some(name.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(opts), None, None);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                return Err(RuntimeError::PullFailed {
                    image: image.to_owned(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The labels of `image`'s configuration; none when there is no such image.
    pub async fn image_labels(&self, image: &str) -> Result<HashMap<String, String>> {
        Ok(self
            .inspect_image(image)
            .await?
            .and_then(|i| i.config)
            .and_then(|c| c.labels)
            .unwrap_or_default())
    }

    /// The image's id (`sha256:…`), or `None` if the engine does not have it.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>> {
        Ok(self.inspect_image(image).await?.and_then(|i| i.id))
    }

    /// The image's size as the engine reports it (its layers, uncompressed): about the size of
    /// its `docker save` archive.
    pub async fn image_size(&self, image: &str) -> Result<Option<u64>> {
        Ok(self
            .inspect_image(image)
            .await?
            .and_then(|i| i.size)
            .and_then(|s| u64::try_from(s).ok()))
    }

    /// The names (`repo:tag`) `image` carries; none when there is no such image.
    pub async fn image_tags(&self, image: &str) -> Result<Vec<String>> {
        Ok(self
            .inspect_image(image)
            .await?
            .and_then(|i| i.repo_tags)
            .unwrap_or_default())
    }

    /// Takes the name `tag` off its image; the image goes with its last name. Not forced: the last
    /// name of an image some container (running or not) was made from stays, without an error.
    pub async fn untag(&self, tag: &str) -> Result<()> {
        let opts = bollard::query_parameters::RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match self.docker.remove_image(tag, Some(opts), None).await {
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409, ..
            }) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Gives `image` the name `tag` (`repo:tag`).
    pub async fn tag(&self, image: &str, tag: &str) -> Result<()> {
        let (repo, t) = split_ref(tag);
        let opts = bollard::query_parameters::TagImageOptions {
            repo: Some(repo.to_owned()),
            tag: Some(t.to_owned()),
        };
        self.docker.tag_image(image, Some(opts)).await.map_err(docker_err)
    }

    /// Saves a container's filesystem as the image `tag`, keeping the command and entrypoint of
    /// the image it was started from (not the command it happens to run). Returns the image id.
    pub async fn commit(&self, container: &str, tag: &str) -> Result<String> {
        let c = self
            .docker
            .inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(docker_err)?;
        let base = match c.image.as_deref() {
            Some(image) => self.docker.inspect_image(image).await.ok().and_then(|i| i.config),
            None => None,
        };
        let (repo, t) = split_ref(tag);
        let opts = bollard::query_parameters::CommitContainerOptions {
            container: Some(container.to_owned()),
            repo: Some(repo.to_owned()),
            tag: Some(t.to_owned()),
            pause: true,
            ..Default::default()
        };
        let config = bollard::models::ContainerConfig {
            cmd: base.as_ref().and_then(|b| b.cmd.clone()),
            entrypoint: base.as_ref().and_then(|b| b.entrypoint.clone()),
            // The task's own variables (RIVER_TASK_ID, …) must not become the image's.
            env: base.as_ref().and_then(|b| b.env.clone()),
            ..Default::default()
        };
        let id = self.docker.commit_container(opts, config).await.map_err(docker_err)?.id;
        Ok(id)
    }

    /// The `docker save` archive of one image, as it is produced.
    pub fn save(&self, image: &str) -> impl Stream<Item = Result<bytes::Bytes>> + Send + use<> {
        self.docker.export_image(image).map(|r| r.map_err(docker_err))
    }

    /// Loads a `docker save` archive from a file (`docker load`).
    pub async fn load(&self, archive: &Path) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(archive)
            .await
            .map_err(|e| RuntimeError::Docker(format!("opening {}: {e}", archive.display())))?;
        let body = futures_util::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let opts = bollard::query_parameters::ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut progress = std::pin::pin!(self.docker.import_image_stream(opts, body, None));
        while let Some(step) = progress.next().await {
            let info = step.map_err(docker_err)?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::Docker(format!("loading {}: {e}", archive.display())));
            }
        }
        Ok(())
    }

    /// Removes an image (by id or name), untagging it everywhere.
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        let opts = bollard::query_parameters::RemoveImageOptions {
            force: true,
            ..Default::default()
        };
        match self.docker.remove_image(image, Some(opts), None).await {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }
}
