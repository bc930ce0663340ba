//! The containers runtime's images, built offline: for each nginx line a Debian root filesystem
//! from `debootstrap` with nginx-light (bookworm 1.22, trixie 1.26, sid 1.30), imported as
//! `recordings-harness/base:<suite>-…`, and `docker/Dockerfile.backend` on the bookworm one with
//! this workspace's `recordings-backend`. Each is tagged by a checksum of what it is made from,
//! so a second build reuses it. The nginx version an image runs is read from `nginx -v` in it.
//! Users who can pull name other images with `HARNESS_NGINX_IMAGE` (e.g. `nginx:stable`),
//! `HARNESS_BACKEND_IMAGE` and `HARNESS_BASE_IMAGE` (the default line's).

use crate::docker::{engine, err};
use crate::error::HarnessError;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use bollard::Docker;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::nginx::NginxLine;
use std::collections::BTreeMap;

/// How a base image is made, for a Debian suite (its tag is this recipe's checksum).
pub fn base_recipe(suite: &str) -> String {
    format!("debootstrap --variant=minbase --include=nginx-light {suite}")
}

/// The label every image the harness builds carries (so an untagged one can be found).
pub const IMAGE_LABEL: &str = "recordings-harness=image";

/// The images a container stack runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// nginx's image (`HARNESS_NGINX_IMAGE`, else the line's base image, which has nginx-light).
    pub nginx: String,
    /// What `nginx -v` says in it (`nginx/1.30.6`).
    pub nginx_version: String,
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

/// A suite's base image tag: `recordings-harness/base:<suite>-<checksum of its recipe>`.
pub fn base_tag_for(suite: &str) -> String {
    format!(
        "recordings-harness/base:{suite}-{}",
        checksum(&[base_recipe(suite).as_bytes()])
    )
}

/// The default line's (bookworm's) base image tag, which the backend image is built on.
pub fn base_tag() -> String {
    base_tag_for(NginxLine::DEFAULT.suite())
}

/// Builds (or finds, when already built from the same content) the images a stack with nginx
/// of `line` runs. `say` gets one line per thing done. Older backend images of ours are
/// removed, so rebuilding after every change leaves no images piling up.
pub async fn build_images(
    backend_bin: &Path,
    line: NginxLine,
    say: &dyn Fn(&str),
) -> Result<Images, HarnessError> {
    let _building = build_lock().await?;
    let docker = engine().await?;
    let base = build_base(&docker, NginxLine::DEFAULT, say).await?;
    let nginx = match std::env::var("HARNESS_NGINX_IMAGE") {
        Ok(image) if line == NginxLine::DEFAULT => image,
        _ if line == NginxLine::DEFAULT => base.clone(),
        _ => build_base(&docker, line, say).await?,
    };
    let backend = match std::env::var("HARNESS_BACKEND_IMAGE") {
        Ok(image) => image,
        Err(_) => build_backend(&docker, backend_bin, &base, say).await?,
    };
    Ok(Images {
        nginx_version: nginx_version(&nginx)?,
        nginx,
        backend,
    })
}

/// The nginx images of `lines` (built where missing), each with the version it really runs.
pub async fn build_nginx_images(
    lines: &[NginxLine],
    say: &dyn Fn(&str),
) -> Result<BTreeMap<NginxLine, (String, String)>, HarnessError> {
    let _building = build_lock().await?;
    let docker = engine().await?;
    let mut out = BTreeMap::new();
    for line in lines {
        let image = build_base(&docker, *line, say).await?;
        out.insert(*line, (nginx_version(&image)?, image));
    }
    Ok(out)
}

/// What `nginx -v` prints in `image` (`nginx/1.26.3`).
pub fn nginx_version(image: &str) -> Result<String, HarnessError> {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", image, "nginx", "-v"])
        .output()
        .map_err(HarnessError::io(format!("docker run {image} nginx -v")))?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.split("version: ")
        .nth(1)
        .map(|v| v.trim().to_string())
        .ok_or_else(|| HarnessError::Command {
            what: format!("nginx -v in {image}"),
            status: out.status.to_string(),
            output: text.into_owned(),
        })
}

/// A suite's base image (Debian with nginx-light), imported from a debootstrap tree unless
/// present.
async fn build_base(
    docker: &Docker,
    line: NginxLine,
    say: &dyn Fn(&str),
) -> Result<String, HarnessError> {
    let own = base_tag_for(line.suite());
    // Where a registry is reachable, a standard image may stand in for the default line's.
    let base = match std::env::var("HARNESS_BASE_IMAGE") {
        Ok(image) if line == NginxLine::DEFAULT => image,
        _ => own.clone(),
    };
    if image_exists(docker, &base).await {
        say(&format!("{base}: present"));
        return Ok(base);
    }
    if base != own {
        return Err(HarnessError::ToolMissing {
            tool: "base image",
            hint: format!("HARNESS_BASE_IMAGE={base} is not present: docker pull {base}"),
        });
    }
    let recipe = base_recipe(line.suite());
    say(&format!("{base}: {recipe} (about 30 s) …"));
    import_rootfs(&recipe, &base)?;
    say(&format!("{base}: built"));
    Ok(base)
}

/// Runs `recipe` (a debootstrap command line) into a fresh tree and imports it as `tag`.
fn import_rootfs(recipe: &str, tag: &str) -> Result<(), HarnessError> {
    let which = crate::locate::which;
    let debootstrap = which("debootstrap").ok_or(HarnessError::ToolMissing {
        tool: "debootstrap",
        hint: "apt-get install debootstrap (it builds the base images from Debian's packages)"
            .into(),
    })?;
    let root = tempfile::Builder::new()
        .prefix("harness-rootfs-")
        .tempdir()
        .map_err(HarnessError::io("create a root filesystem dir"))?;
    let mut args: Vec<&str> = recipe.split_whitespace().skip(1).collect();
    let dir_s = root.path().join("rootfs").display().to_string();
    args.push(&dir_s);
    run(Command::new(debootstrap).args(&args), "debootstrap")?;
    // `docker import` of the tree: the CLI streams it; the same through the API needs it all in memory.
    let mut import = Command::new("sh");
    import.args([
        "-c",
        "tar -C \"$1\" -c . | docker import --change 'CMD [\"nginx\", \"-g\", \"daemon off;\"]' --change \"LABEL $3\" - \"$2\"",
        "import",
        &dir_s,
        tag,
        IMAGE_LABEL,
    ]);
    run(&mut import, "docker import of the base root filesystem")
    // The tree is root-owned and large: it is removed when `root` drops, here.
}

/// An image of one of this workspace's binaries, built from a Dockerfile that copies it from
/// `target/docker/<binary>` onto a base image.
struct BinaryImage<'a> {
    /// The image's repository, also its stable tag's (`recordings-harness/backend`).
    repository: &'static str,
    /// The binary.
    binary: &'a Path,
    /// Its name in the build context (`recordings-backend`).
    name: &'static str,
    /// The Dockerfile's text and name.
    dockerfile: (&'static str, &'static str),
}

/// The tag every image of ours also carries, for users who name images by a fixed tag (the
/// testcontainers images): this harness's version.
pub const STABLE_TAG: &str = env!("CARGO_PKG_VERSION");

/// The backend image: `docker/Dockerfile.backend` on `base` with this `recordings-backend`,
/// unless present; older backend images of ours are removed.
async fn build_backend(
    docker: &Docker,
    backend_bin: &Path,
    base: &str,
    say: &dyn Fn(&str),
) -> Result<String, HarnessError> {
    let image = BinaryImage {
        repository: "recordings-harness/backend",
        binary: backend_bin,
        name: "recordings-backend",
        dockerfile: (crate::assets::BACKEND_DOCKERFILE, "Dockerfile.backend"),
    };
    build_binary_image(docker, &image, base, say).await
}

/// mock-twilio's image: `docker/Dockerfile.mock-twilio` on `base` with this `mock-twilio`.
async fn build_mock_twilio(
    docker: &Docker,
    bin: &Path,
    base: &str,
    say: &dyn Fn(&str),
) -> Result<String, HarnessError> {
    let image = BinaryImage {
        repository: "recordings-harness/mock-twilio",
        binary: bin,
        name: "mock-twilio",
        dockerfile: (
            crate::assets::MOCK_TWILIO_DOCKERFILE,
            "Dockerfile.mock-twilio",
        ),
    };
    build_binary_image(docker, &image, base, say).await
}

/// Builds `image` unless present (tagged by a checksum of what it is made from), and removes
/// older images of the same repository.
async fn build_binary_image(
    docker: &Docker,
    image: &BinaryImage<'_>,
    base: &str,
    say: &dyn Fn(&str),
) -> Result<String, HarnessError> {
    let binary = std::fs::read(image.binary)
        .map_err(HarnessError::io(format!("read {}", image.binary.display())))?;
    let (dockerfile_text, dockerfile_name) = image.dockerfile;
    let tag = format!(
        "{}:{}",
        image.repository,
        checksum(&[&binary, dockerfile_text.as_bytes(), base.as_bytes()])
    );
    if image_exists(docker, &tag).await {
        say(&format!("{tag}: present"));
    } else {
        let ctx = tempfile::Builder::new()
            .prefix("harness-build-")
            .tempdir()
            .map_err(HarnessError::io("create a build context"))?;
        let bin = ctx.path().join("target/docker").join(image.name);
        std::fs::create_dir_all(bin.parent().unwrap())
            .map_err(HarnessError::io("create the build context"))?;
        std::fs::write(&bin, &binary).map_err(HarnessError::io("copy the binary"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
            .map_err(HarnessError::io("chmod the binary"))?;
        let dockerfile = ctx.path().join(dockerfile_name);
        std::fs::write(&dockerfile, dockerfile_text)
            .map_err(HarnessError::io(format!("write {dockerfile_name}")))?;
        run(
            Command::new("docker")
                .args(["build", "-q", "--label", IMAGE_LABEL, "--build-arg"])
                .arg(format!("BASE={base}"))
                .arg("-t")
                .arg(&tag)
                .arg("-f")
                .arg(&dockerfile)
                .arg(ctx.path()),
            &format!("docker build of docker/{dockerfile_name}"),
        )?;
        say(&format!("{tag}: built"));
    }
    remove_superseded(docker, image.repository, &tag, say).await?;
    Ok(tag)
}

/// Tags `image` as `repository:tag` (moving the tag from an older image).
async fn tag_as(
    docker: &Docker,
    image: &str,
    repository: &str,
    tag: &str,
) -> Result<(), HarnessError> {
    let options = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repository)
        .tag(tag)
        .build();
    docker
        .tag_image(image, Some(options))
        .await
        .map_err(err(format!("tag {image} as {repository}:{tag}")))
}

/// Older images of `repository` are of no use: removes them.
async fn remove_superseded(
    docker: &Docker,
    repository: &str,
    current: &str,
    say: &dyn Fn(&str),
) -> Result<(), HarnessError> {
    let listed = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&HashMap::from([("reference", vec![repository])]))
                .build(),
        ))
        .await
        .map_err(err("list images"))?;
    for image in listed {
        if image.repo_tags.iter().any(|t| t == current) {
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
    // An image untagged while a container still ran it stays behind untagged: prune those.
    let dangling = HashMap::from([("dangling", vec!["true"]), ("label", vec![IMAGE_LABEL])]);
    let options = bollard::query_parameters::PruneImagesOptionsBuilder::default()
        .filters(&dangling)
        .build();
    let _ = docker.prune_images(Some(options)).await;
    Ok(())
}

/// What [`build_testcontainers_images`] built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestcontainersImages {
    /// The nginx images, by line (`recordings-harness/nginx:1.22`).
    pub nginx: Vec<String>,
    /// `recordings-harness/backend:<STABLE_TAG>`.
    pub backend: String,
    /// `recordings-harness/mock-twilio:<STABLE_TAG>`.
    pub mock_twilio: String,
}

/// The images [`crate::testcontainers_images`] names, built where missing: nginx of `lines`
/// tagged by its line (the harness's own debootstrap images only), and the reference backend and
/// mock-twilio (found as [`crate::locate::find_backend`] finds the backend) tagged
/// [`STABLE_TAG`].
pub async fn build_testcontainers_images(
    lines: &[NginxLine],
    say: &dyn Fn(&str),
) -> Result<TestcontainersImages, HarnessError> {
    let _building = build_lock().await?;
    let docker = engine().await?;
    let backend_bin = crate::locate::find_backend()?;
    let mock_bin = crate::locate::find_mock_twilio()?;
    let mut nginx = Vec::new();
    for line in lines {
        let base = build_base(&docker, *line, say).await?;
        if base == base_tag_for(line.suite()) {
            tag_as(&docker, &base, NGINX_REPOSITORY, line.name()).await?;
            nginx.push(nginx_tag(*line));
        }
    }
    // The same base as the containers runtime's backend, so the two builds are one image.
    let base = build_base(&docker, NginxLine::DEFAULT, say).await?;
    let backend = build_backend(&docker, &backend_bin, &base, say).await?;
    let mock_twilio = build_mock_twilio(&docker, &mock_bin, &base, say).await?;
    let mut stable = Vec::new();
    for (image, repository) in [
        (backend, "recordings-harness/backend"),
        (mock_twilio, "recordings-harness/mock-twilio"),
    ] {
        tag_as(&docker, &image, repository, STABLE_TAG).await?;
        stable.push(format!("{repository}:{STABLE_TAG}"));
    }
    let [backend, mock_twilio] = <[String; 2]>::try_from(stable).expect("two images");
    Ok(TestcontainersImages {
        nginx,
        backend,
        mock_twilio,
    })
}

/// Image builds of every harness process on the machine, one at a time (nextest runs a process
/// per test, and each would otherwise build the same images at once).
async fn build_lock() -> Result<crate::machine_lock::MachineLock, HarnessError> {
    crate::machine_lock::MachineLock::any(&["recordings-harness-images.lock".to_string()]).await
}

/// The repository of the nginx images' stable tags.
pub const NGINX_REPOSITORY: &str = "recordings-harness/nginx";

/// The stable tag of a line's nginx image: `recordings-harness/nginx:1.22`.
pub fn nginx_tag(line: NginxLine) -> String {
    format!("{NGINX_REPOSITORY}:{line}")
}

/// The images for `backend_bin` and `line`, built at most once per process (stacks start
/// concurrently).
pub async fn images_once(backend_bin: &Path, line: NginxLine) -> Result<Images, HarnessError> {
    static BUILT: tokio::sync::Mutex<BTreeMap<(PathBuf, NginxLine), Images>> =
        tokio::sync::Mutex::const_new(BTreeMap::new());
    let mut built = BUILT.lock().await;
    let key = (backend_bin.to_path_buf(), line);
    if let Some(images) = built.get(&key) {
        return Ok(images.clone());
    }
    let images = build_images(backend_bin, line, &|_| {}).await?;
    built.insert(key, images.clone());
    Ok(images)
}
