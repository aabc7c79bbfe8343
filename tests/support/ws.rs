//! A WebSocket client for `GET /api/v1/ws`: connect, send and read JSON frames, see the close.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{TestApp, TestUser};

/// How long a frame may take to come.
const WAIT: Duration = Duration::from_secs(10);

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

pub fn ws_request(app: &TestApp) -> Request<()> {
    request_to(app.port)
}

/// A handshake with the server listening on `port`.
pub fn request_to(port: u16) -> Request<()> {
    format!("ws://127.0.0.1:{port}/api/v1/ws")
        .into_client_request()
        .unwrap()
}

/// A handshake carrying `user`'s token in the `Authorization` header.
pub fn authorized(app: &TestApp, user: &TestUser) -> Request<()> {
    authorized_to(app.port, &user.token)
}

/// A handshake with the server on `port`, carrying `token` in the `Authorization` header.
pub fn authorized_to(port: u16, token: &str) -> Request<()> {
    let mut request = request_to(port);
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    request
}

/// A socket authenticated by the `Authorization` header.
pub async fn connect(app: &TestApp, user: &TestUser) -> Socket {
    open(authorized(app, user)).await
}

pub async fn open(request: Request<()>) -> Socket {
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    socket
}

/// The handshake's HTTP status when it is refused.
pub async fn refused(request: Request<()>) -> (u16, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap(),
            )
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the handshake was accepted"),
    }
}

pub async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON frame (pings are answered by the client library as it reads).
pub async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The close frame that ends the connection.
pub async fn closed(socket: &mut Socket) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code, frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("connection failed: {error}"),
        }
    }
}
