//! Files the harness carries inside its binary, so that an installed `harness` needs no
//! checkout: the player page every stack's nginx serves, and the backend image's Dockerfile.

/// The player page, as the front end serves it from nginx's static root (`/player.html`);
/// the `play` step's browser opens it.
pub const PLAYER_PAGE: &str = include_str!("../../web/player.html");

/// `docker/Dockerfile.backend`, as the harness builds the reference backend's image.
pub const BACKEND_DOCKERFILE: &str = include_str!("../../docker/Dockerfile.backend");

/// `docker/Dockerfile.mock-twilio`, as the harness builds mock-twilio's image.
pub const MOCK_TWILIO_DOCKERFILE: &str = include_str!("../../docker/Dockerfile.mock-twilio");

/// The nginx config of every profile, by its file name under `docker/`: what a profile runs
/// when the project has no file of that name among its configs (and what `harness init`
/// copies for a team to edit).
pub const NGINX_CONFIGS: [(&str, &str); 4] = [
    ("nginx.conf", include_str!("../../docker/nginx.conf")),
    (
        "nginx.legacy.conf",
        include_str!("../../docker/nginx.legacy.conf"),
    ),
    (
        "nginx.stock.conf",
        include_str!("../../docker/nginx.stock.conf"),
    ),
    (
        "nginx.hardened.conf",
        include_str!("../../docker/nginx.hardened.conf"),
    ),
];

/// The carried config named `name`.
pub fn nginx_config(name: &str) -> Option<&'static str> {
    NGINX_CONFIGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// The scenarios `harness init` starts a project with, by the file name it writes them under:
/// the write-up's checks, the keep-alive race on a webhook and under Play, Twilio resetting
/// the download, and a backend restart between two plays.
pub const STARTER_SCENARIOS: [(&str, &str); 5] = [
    (
        "seed-manual-checks.toml",
        include_str!("../../scenarios/checks/seed-manual-checks.toml"),
    ),
    (
        "keepalive-race.toml",
        include_str!("../../scenarios/hop/keepalive-race.toml"),
    ),
    (
        "play-keepalive-race.toml",
        include_str!("../../scenarios/browser/play-keepalive-race.toml"),
    ),
    (
        "twilio-reset.toml",
        include_str!("../../scenarios/twilio/reset.toml"),
    ),
    (
        "backend-restart.toml",
        include_str!("../../scenarios/checks/backend-restart.toml"),
    ),
];
