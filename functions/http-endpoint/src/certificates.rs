//! The client certificate of a request: from this process's TLS listener, or from API
//! Gateway's mutual-TLS custom domain, which passes it in the request context.

use axum::http::request::Parts;
use drogue_shared::runtime::tls::ClientCertificates;
use lambda_http::request::RequestContext;

/// The client certificate chain (DER, end entity first), if the client sent one.
pub fn client_chain(parts: &Parts) -> Option<Vec<Vec<u8>>> {
    if let Some(ClientCertificates(chain)) = parts.extensions.get::<ClientCertificates>() {
        return (!chain.is_empty()).then(|| chain.as_ref().clone());
    }
    let Some(RequestContext::ApiGatewayV2(context)) = parts.extensions.get::<RequestContext>()
    else {
        return None;
    };
    let pem = context
        .authentication
        .as_ref()?
        .client_cert
        .as_ref()?
        .client_cert_pem
        .as_deref()?;
    let chain: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect();
    (!chain.is_empty()).then_some(chain)
}
