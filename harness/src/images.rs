//! The containers runtime's images, built offline: a Debian root filesystem from
//! `debootstrap` with nginx-light, imported as `recordings-harness/base:…`, and
//! `docker/Dockerfile.backend` on top of it with this workspace's `recordings-backend`. Both are
//! tagged by a checksum of what they are made from, so a second build reuses them. Users who can
//! pull name other images with `HARNESS_NGINX_IMAGE` (e.g. `nginx:stable`) and
//! `HARNESS_BACKEND_IMAGE`.

use crate::docker::{engine, err};
use crate::error::HarnessError;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use bollard::Docker;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How the base image is made (its tag is this recipe's checksum).
pub const BASE_RECIPE: &str = "debootstrap --variant=minbase --include=nginx-light bookworm";

/// Where the backend binary sits in the Dockerfile's build context.
pub const BACKEND_IN_CONTEXT: &str = "target/docker/recordings-backend";

/// The images a container stack runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// nginx's image (`HARNESS_NGINX_IMAGE`, else the base image, which has nginx-light).
    pub nginx: String,
    /// The backend's image (`HARNESS_BACKEND_IMAGE`, else built from Dockerfile.backend).
    pub backend: String,
}

async fn image_exists(docker: &Docker, tag: &str) -> bool {
    docker.inspect_image(tag).await.is_ok()
}

fn checksum(parts: &[&[u8]]) -> String {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
        h.update(b"\0");
    }
    format!("{:08x}", h.finalize())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), HarnessError> {
    let out = cmd.output().map_err(HarnessError::io(format!(
        "{what} ({:?})",
        cmd.get_program()
    )))?;
    if !out.status.success() {
        let tail: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(HarnessError::Command {
            what: what.to_string(),
            status: out.status.to_string(),
            output: tail,
        });
    }
    Ok(())
}

/// The base image's tag: `recordings-harness/base:bookworm-<checksum of the recipe>`.
pub fn base_tag() -> String {
    format!(
        "recordings-harness/base:bookworm-{}",
        checksum(&[BASE_RECIPE.as_bytes()])
    )
}

/// Builds (or finds, when already built from the same content) the base and backend images.
/// `say` gets one line per thing done. Older backend images of ours are removed, so rebuilding
/// after every change leaves no images piling up.
pub async fn build_images(backend_bin: &Path, say: &dyn Fn(&str)) -> Result<Images, HarnessError> {
    let docker = engine().await?;
    let base = build_base(&docker, say).await?;
    let nginx = std::env::var("HARNESS_NGINX_IMAGE").unwrap_or_else(|_| base.clone());
    let backend = match std::env::var("HARNESS_BACKEND_IMAGE") {
        Ok(image) => image,
        Err(_) => build_backend(&docker, backend_bin, &base, say).await?,
    };
    Ok(Images { nginx, backend })
}

/// The base image (Debian with nginx-light), imported from a debootstrap tree unless present.
async fn build_base(docker: &Docker, say: &dyn Fn(&str)) -> Result<String, HarnessError> {
    // Where a registry is reachable, a standard image may stand in for the debootstrap one.
    let base = std::env::var("HARNESS_BASE_IMAGE").unwrap_or_else(|_| base_tag());
    if image_exists(docker, &base).await {
        say(&format!("{base}: present"));
    } else if base != base_tag() {
        return Err(HarnessError::ToolMissing {
            tool: "base image",
            hint: format!("HARNESS_BASE_IMAGE={base} is not present: docker pull {base}"),
        });
    } else {
        say(&format!("{base}: {BASE_RECIPE} (about 30 s) …"));
        let which = |tool: &str| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        };
        let debootstrap = which("debootstrap").ok_or(HarnessError::ToolMissing {
            tool: "debootstrap",
            hint: "apt-get install debootstrap (it builds the base image from Debian's packages)"
                .into(),
        })?;
        let root = tempfile::Builder::new()
            .prefix("harness-rootfs-")
            .tempdir()
            .map_err(HarnessError::io("create a root filesystem dir"))?;
        let mut args: Vec<&str> = BASE_RECIPE.split_whitespace().skip(1).collect();
        let dir = root.path().join("rootfs");
        let dir_s = dir.display().to_string();
        args.push(&dir_s);
        run(Command::new(debootstrap).args(&args), "debootstrap")?;
        // `docker import` of the tree: the CLI streams it; the same through the API needs it all in memory.
        let mut import = Command::new("sh");
        import.args([
            "-c",
            "tar -C \"$1\" -c . | docker import --change 'CMD [\"nginx\", \"-g\", \"daemon off;\"]' - \"$2\"",
            "import",
            &dir_s,
            &base,
        ]);
        run(&mut import, "docker import of the base root filesystem")?;
        // The tree is root-owned and large: remove it now rather than leave it in /tmp.
        drop(root);
        say(&format!("{base}: built"));
    }
    Ok(base)
}

/// The backend image: `docker/Dockerfile.backend` on `base` with this `recordings-backend`,
/// unless present; older backend images of ours are removed.
async fn build_backend(
    docker: &Docker,
    backend_bin: &Path,
    base: &str,
    say: &dyn Fn(&str),
) -> Result<String, HarnessError> {
    let binary = std::fs::read(backend_bin)
        .map_err(HarnessError::io(format!("read {}", backend_bin.display())))?;
    let backend = format!(
        "recordings-harness/backend:{}",
        checksum(&[
            &binary,
            crate::assets::BACKEND_DOCKERFILE.as_bytes(),
            base.as_bytes()
        ])
    );
    if image_exists(docker, &backend).await {
        say(&format!("{backend}: present"));
    } else {
        let ctx = tempfile::Builder::new()
            .prefix("harness-build-")
            .tempdir()
            .map_err(HarnessError::io("create a build context"))?;
        let bin = ctx.path().join(BACKEND_IN_CONTEXT);
        std::fs::create_dir_all(bin.parent().unwrap())
            .map_err(HarnessError::io("create the build context"))?;
        std::fs::write(&bin, &binary).map_err(HarnessError::io("copy the backend binary"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
            .map_err(HarnessError::io("chmod the backend binary"))?;
        let dockerfile = ctx.path().join("Dockerfile.backend");
        std::fs::write(&dockerfile, crate::assets::BACKEND_DOCKERFILE)
            .map_err(HarnessError::io("write Dockerfile.backend"))?;
        run(
            Command::new("docker")
                .args(["build", "-q", "--build-arg"])
                .arg(format!("BASE={base}"))
                .arg("-t")
                .arg(&backend)
                .arg("-f")
                .arg(&dockerfile)
                .arg(ctx.path()),
            "docker build of docker/Dockerfile.backend",
        )?;
        say(&format!("{backend}: built"));
    }
    remove_superseded(docker, &backend, say).await?;
    Ok(backend)
}

/// Older backend images of ours are of no use: removes them.
async fn remove_superseded(
    docker: &Docker,
    backend: &str,
    say: &dyn Fn(&str),
) -> Result<(), HarnessError> {
    let listed = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&HashMap::from([(
                    "reference",
                    vec!["recordings-harness/backend"],
                )]))
                .build(),
        ))
        .await
        .map_err(err("list images"))?;
    for image in listed {
        if image.repo_tags.iter().any(|t| t == backend) {
            continue;
        }
        for tag in &image.repo_tags {
            let _ = docker
                .remove_image(
                    tag,
                    Some(RemoveImageOptionsBuilder::default().build()),
                    None,
                )
                .await;
            say(&format!("{tag}: removed (superseded)"));
        }
    }
    Ok(())
}

/// The images for `backend_bin`, built at most once per process (stacks start concurrently).
pub async fn images_once(backend_bin: &Path) -> Result<Images, HarnessError> {
    static BUILT: tokio::sync::Mutex<Option<(PathBuf, Images)>> =
        tokio::sync::Mutex::const_new(None);
    let mut built = BUILT.lock().await;
    if let Some((bin, images)) = built.as_ref() {
        if bin == backend_bin {
            return Ok(images.clone());
        }
    }
    let images = build_images(backend_bin, &|_| {}).await?;
    *built = Some((backend_bin.to_path_buf(), images.clone()));
    Ok(images)
}
