//! The floor under `bench/chat.sh`'s idle-WebSocket measure: a bare actix-web + actix-ws
//! server (two workers, `TCP_NODELAY`) whose connections only answer pings. What one idle
//! connection costs here is what the HTTP and WebSocket layers cost before any of ours.
//! The server itself no longer uses actix-ws's session and channel (see `chat/wire.rs`), so
//! it can come in under this floor.
//! Usage: `chat_bench`'s `idle` against `ws_floor <port>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use actix_ws::Message;
use futures_util::StreamExt;

async fn socket(request: HttpRequest, body: web::Payload) -> actix_web::Result<HttpResponse> {
    let (response, mut session, mut stream) = actix_ws::handle(&request, body)?;
    actix_web::rt::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Ping(bytes) = message
                && session.pong(&bytes).await.is_err()
            {
                return;
            }
        }
    });
    Ok(response)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map_or(18096, |p| p.parse().unwrap());
    HttpServer::new(|| App::new().route("/api/v1/ws", web::get().to(socket)))
        .workers(2)
        .tcp_nodelay(true)
        .bind(("127.0.0.1", port))?
        .run()
        .await
}
