//! Lambda entry point (`bootstrap` once built with `cargo lambda build`).

use lambda_http::{service_fn, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(hello_lambda::handler)).await
}
