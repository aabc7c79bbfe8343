//! The baseline for `bench/foundation.sh`: a bare actix-web server answering `/health`
//! with the same JSON as Companion, without any of its middleware.
//! `PORT=8081 cargo run --release --example hello_actix`

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8081);
    HttpServer::new(|| {
        App::new().route(
            "/health",
            web::get()
                .to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
        )
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
