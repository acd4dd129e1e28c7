//! Paired tokens at the door: the middleware in front of every protected route, and the one
//! check (`authenticate`) that `/mcp` makes itself.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, bearer};
use crate::auth::{Auth, Caller};

/// Admits a request with a paired token, putting its [`Caller`] into the extensions.
pub(crate) async fn require_token(
    State(auth): State<Auth>,
    mut req: Request,
    next: Next,
) -> Response {
    match authenticate(&auth, req.headers()) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refused) => refused.into_response(),
    }
}

/// Why a request's token was refused: the 401 it is answered with.
pub(crate) struct Unauthorized(&'static str, &'static str);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut r = ApiError::new(StatusCode::UNAUTHORIZED, self.0, self.1).into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"switchboard\""),
        );
        r
    }
}

/// The paired client a request's bearer token belongs to.
pub(crate) fn authenticate(auth: &Auth, headers: &HeaderMap) -> Result<Caller, Unauthorized> {
    let Some(token) = bearer(headers) else {
        return Err(Unauthorized(
            "token_required",
            "a token is required: pair this client (ask for a code with `switchboard pair`, \
             then POST it to /pair) and send `Authorization: Bearer <token>`",
        ));
    };
    auth.verify(&token).ok_or(Unauthorized(
        "token_invalid",
        "this token is not paired (it may have been revoked)",
    ))
}
