// kiln cert: X.509 certificates made through a KEYREF (file or pkcs11:), and shown.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/output_file.hpp"
#include "commands/commands.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/certificate_create.hpp"
#include "signing/key_ref.hpp"

namespace kiln::commands {

void add_cert(CLI::App& app, cli::Context& ctx) {
  auto* cert = app.add_subcommand("cert", "Make X.509 certificates with a key file or token key; show them");
  cert->require_subcommand(1);

  struct CreateArgs {
    std::string key, subject, issuer_cert, issuer_key, out;
    bool ca = false, force = false;
    int days = 365;
    cli::SecretSource passphrase;
  };
  auto a = std::make_shared<CreateArgs>();
  auto* create = cert->add_subcommand(
      "create", "Make a self-signed certificate for --key, or one issued by --issuer-cert/--issuer-key");
  create->add_option("--key", a->key, "The certified key (KEYREF: PEM file or pkcs11: URI; a public key is enough "
                                      "when an issuer signs)")
      ->type_name("KEYREF")
      ->required();
  create->add_option("--subject", a->subject, "Subject, OpenSSL style: \"/CN=Station CA/O=Example\"")->required();
  create->add_flag("--ca", a->ca, "A CA certificate (basicConstraints CA:TRUE, keyCertSign)");
  auto* issuer_cert = create->add_option("--issuer-cert", a->issuer_cert, "Issuing CA certificate (PEM or DER)");
  auto* issuer_key =
      create->add_option("--issuer-key", a->issuer_key, "The issuing CA's key (KEYREF)")->type_name("KEYREF");
  issuer_cert->needs(issuer_key);
  issuer_key->needs(issuer_cert);
  create->add_option("--days", a->days, "Validity in days from now (1..36500, default 365)");
  cli::add_output_file_option(create, a->out, "Where to write the certificate (PEM)")->required();
  cli::add_force_flag(create, a->force);
  cli::add_passphrase_options(create, a->passphrase);
  create->callback([&ctx, a] {
    cli::check_overwrite(a->out, a->force);
    auto options = ctx.key_options(a->passphrase);
    CertificateRequest request;
    request.subject = a->subject;
    request.ca = a->ca;
    request.days = a->days;
    std::optional<Bytes> issuer;
    std::unique_ptr<Signer> signer;
    if (a->issuer_cert.empty()) {
      signer = open_signer(a->key, options);
      request.subject_public_key = signer->public_key_der();
    } else {
      request.subject_public_key = load_public_key(a->key, options);
      issuer = certificate_der_from_file_bytes(read_file(a->issuer_cert), a->issuer_cert);
      signer = open_signer(a->issuer_key, options);
    }
    Bytes der = create_certificate(request, *signer, issuer);
    write_file_atomic(a->out, as_bytes(certificate_to_pem(der)));
    auto info = describe_certificate(der);
    ctx.render(cli::Json{{"output", a->out},
                         {"subject", info.subject},
                         {"issuer", info.issuer},
                         {"ca", info.ca},
                         {"serial", info.serial_hex},
                         {"not_after", info.not_after},
                         {"fingerprint", "sha256:" + info.fingerprint}});
  });

  auto file = std::make_shared<std::string>();
  auto* show = cert->add_subcommand("show", "Show a certificate: subject, issuer, validity, key, CA flag");
  show->add_option("FILE", *file, "Certificate (PEM or DER)")->required();
  show->callback([&ctx, file] {
    auto info = describe_certificate(certificate_der_from_file_bytes(read_file(*file), *file));
    ctx.render(cli::Json{{"file", *file},
                         {"subject", info.subject},
                         {"issuer", info.issuer},
                         {"serial", info.serial_hex},
                         {"not_before", info.not_before},
                         {"not_after", info.not_after},
                         {"ca", info.ca},
                         {"self_signed", info.self_signed},
                         {"self_signature_valid",
                          info.self_signature_ok ? cli::Json(*info.self_signature_ok) : cli::Json(nullptr)},
                         {"key_type", std::string(key_type_name(info.key_type))},
                         {"fingerprint", "sha256:" + info.fingerprint}});
  });
}

}  // namespace kiln::commands
