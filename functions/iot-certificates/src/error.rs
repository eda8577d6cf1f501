//! The IoT Core calls that failed, one variant each, the SDK's error as the source; and
//! how an error is written with its causes.

use aws_sdk_iot::config::http::HttpResponse;
use aws_sdk_iot::error::SdkError;
use aws_sdk_iot::operation::{
    attach_policy::AttachPolicyError, create_policy::CreatePolicyError,
    delete_ca_certificate::DeleteCACertificateError, delete_policy::DeletePolicyError,
    describe_certificate::DescribeCertificateError, detach_policy::DetachPolicyError,
    list_attached_policies::ListAttachedPoliciesError,
    register_ca_certificate::RegisterCACertificateError,
    update_ca_certificate::UpdateCACertificateError, update_certificate::UpdateCertificateError,
};
use std::error::Error;
use std::fmt;

/// An IoT Core call's error (boxed: the SDK's errors are large).
pub type Sdk<E> = Box<SdkError<E, HttpResponse>>;

/// An IoT Core call that failed, or answered without what it must hold.
#[derive(Debug, thiserror::Error)]
pub enum IotError {
    #[error("cannot describe the certificate {id}")]
    DescribeCertificate {
        id: String,
        #[source]
        source: Sdk<DescribeCertificateError>,
    },
    #[error("IoT Core described no certificate")]
    NoDescription,
    #[error("a certificate without an ARN")]
    NoArn,
    #[error("cannot activate the certificate {id}")]
    Activate {
        id: String,
        #[source]
        source: Sdk<UpdateCertificateError>,
    },
    #[error("cannot revoke the certificate {id}")]
    Revoke {
        id: String,
        #[source]
        source: Sdk<UpdateCertificateError>,
    },
    #[error("cannot create the policy {policy}")]
    CreatePolicy {
        policy: String,
        #[source]
        source: Sdk<CreatePolicyError>,
    },
    #[error("cannot replace the document of the policy {policy}")]
    ReplacePolicy {
        policy: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot attach the policy {policy}")]
    AttachPolicy {
        policy: String,
        #[source]
        source: Sdk<AttachPolicyError>,
    },
    #[error("cannot list the policies of the certificate {id}")]
    ListAttachedPolicies {
        id: String,
        #[source]
        source: Sdk<ListAttachedPoliciesError>,
    },
    #[error("cannot detach the policy {policy} from {id}")]
    DetachPolicy {
        policy: String,
        id: String,
        #[source]
        source: Sdk<DetachPolicyError>,
    },
    #[error("cannot delete the policy {policy}")]
    DeletePolicy {
        policy: String,
        #[source]
        source: Sdk<DeletePolicyError>,
    },
    #[error("cannot register a trust anchor")]
    RegisterCa(#[source] Sdk<RegisterCACertificateError>),
    #[error("no certificate id")]
    NoCertificateId,
    #[error("cannot deactivate the CA certificate {id}")]
    DeactivateCa {
        id: String,
        #[source]
        source: Sdk<UpdateCACertificateError>,
    },
    #[error("cannot delete the CA certificate {id}")]
    DeleteCa {
        id: String,
        #[source]
        source: Sdk<DeleteCACertificateError>,
    },
}

/// Whether IoT Core answered that the resource does not exist (anymore).
pub(crate) fn gone<E>(e: &SdkError<E, HttpResponse>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
}

/// An error and its causes, `: ` between them (as `anyhow` writes `{:#}`).
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_names_every_cause() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&e).to_string(), "outer: inner");
        assert_eq!(
            Chain(&e).to_string(),
            format!(
                "{:#}",
                anyhow::Error::new(Outer(std::io::Error::other("inner")))
            )
        );
    }
}
