//! The connection to the server: plain or TLS channel, and the bearer token
//! added to every call.

use std::time::Duration;

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use super::{
    ClientOptions,
    error::{Failure, Result, chain},
};
use crate::proto::{execution_service_client::ExecutionServiceClient, pipeline_service_client::PipelineServiceClient};

/// The clients of a connected command (cheap to clone: one shared channel).
#[derive(Clone)]
pub struct Client {
    pub pipelines: PipelineServiceClient<InterceptedService<Channel, Bearer>>,
    pub executions: ExecutionServiceClient<InterceptedService<Channel, Bearer>>,
}

impl Client {
    pub async fn connect(options: &ClientOptions) -> Result<Client> {
        let token = crate::credentials::value_or_file(
            options.token.clone(),
            options.token_file.as_deref(),
            crate::credentials::option("token"),
        )
        .map_err(|e| Failure::usage(format!("{e:#}")))?;
        let bearer = Bearer::new(token.as_deref())?;
        let server =
            if options.server.contains("://") { options.server.clone() } else { format!("http://{}", options.server) };
        let mut endpoint = Endpoint::from_shared(server.clone())
            .map_err(|e| Failure::usage(format!("--server {:?} is not a URL: {}", options.server, chain(&e))))?
            .connect_timeout(Duration::from_secs(10));
        if server.starts_with("https://") {
            let tls = match &options.ca_file {
                Some(path) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| Failure::usage(format!("cannot read --ca-file {}: {e}", path.display())))?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_webpki_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Failure::usage(format!("cannot set up TLS for {server}: {}", chain(&e))))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| Failure::failed(format!("cannot connect to {server}: {}", chain(&e))))?;
        Ok(Client {
            pipelines: PipelineServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            executions: ExecutionServiceClient::with_interceptor(channel, bearer),
        })
    }
}

/// Adds `authorization: Bearer TOKEN` to every call, when there is a token.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    fn new(token: Option<&str>) -> Result<Self> {
        let value = token
            .filter(|t| !t.is_empty())
            .map(|t| format!("Bearer {t}").parse().map_err(|_| Failure::usage("the token is not valid header text")))
            .transpose()?;
        Ok(Bearer(value))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}
