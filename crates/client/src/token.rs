//! The bearer token a client presents, when the service has a tokens
//! file (a `data_plane` token for the follower and the event sender).

use tonic::metadata::{Ascii, MetadataValue};

/// `authorization: Bearer <token>` on every request, or nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// The header of `token` (`None`: no token); refused when it cannot
    /// be a header value.
    pub(crate) fn new(token: Option<&str>) -> Result<Self, String> {
        token
            .map(|token| {
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| "token: must be printable ASCII".to_owned())
            })
            .transpose()
            .map(Self)
    }

    /// `message` as a request carrying the token.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_rides_on_every_request_and_a_bad_one_is_refused() {
        let bearer = Bearer::new(Some("data-plane-token-0123456")).expect("ascii");
        let request = bearer.request(());
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok()),
            Some("Bearer data-plane-token-0123456")
        );
        assert!(
            Bearer::new(None)
                .expect("none")
                .request(())
                .metadata()
                .is_empty()
        );
        assert!(Bearer::new(Some("line\nbreak")).is_err());
    }
}
