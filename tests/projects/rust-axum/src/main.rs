use axum::{Json, Router, routing::get};
use serde::Serialize;

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

async fn root() -> &'static str {
    "hello from axum\n"
}

async fn healthz() -> Json<Health> {
    Json(health())
}

fn health() -> Health {
    Health { status: "ok" }
}

#[tokio::main]
async fn main() {
    let app = Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

#[cfg(test)]
mod tests {
    #[test]
    fn health_is_ok() {
        assert_eq!(super::health().status, "ok");
    }
}
