//! Files the harness carries inside its binary, so that an installed `harness` needs no
//! checkout: the player page every stack's nginx serves, and the backend image's Dockerfile.

/// The player page, as the front end serves it from nginx's static root (`/player.html`);
/// the `play` step's browser opens it.
pub const PLAYER_PAGE: &str = include_str!("../../web/player.html");

/// `docker/Dockerfile.backend`, as the harness builds the reference backend's image.
pub const BACKEND_DOCKERFILE: &str = include_str!("../../docker/Dockerfile.backend");
