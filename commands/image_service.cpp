// kiln image upload|list|show|download|delete: images on the service, content-addressed by SHA-256.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/context.hpp"
#include "cli/output_file.hpp"
#include "cli/progress.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"
#include "core/error.hpp"

namespace kiln::commands {
namespace {

struct ImageServiceArgs {
  std::string file;
  std::string manifest;
  std::string id;
  std::vector<std::string> ids;
  std::string out;
  bool force = false;
};

}  // namespace

void add_image_service_verbs(CLI::App* image, cli::Context& ctx) {
  auto args = std::make_shared<ImageServiceArgs>();

  auto* upload = image->add_subcommand("upload", "Upload an image to the service (resumes an interrupted upload)");
  upload->add_option("FILE", args->file, "Signed image")->required()->check(CLI::ExistingFile);
  upload->add_option("--manifest", args->manifest, "SUIT envelope to upload with it")->check(CLI::ExistingFile);
  upload->callback([&ctx, args] {
    auto api = connect(ctx);
    auto result = transport::upload_image(api, args->file, cli::progress_callback(ctx, "uploading"));
    if (!args->manifest.empty()) {
      auto manifest = transport::upload_image(api, args->manifest, cli::progress_callback(ctx, "manifest"))["id"].get<std::string>();
      result["manifest"] = manifest;
      result["sequence"] = transport::link_image_manifest(api, result["id"].get<std::string>(), manifest)["sequence"];
    }
    ctx.render(result);
  });

  auto* list = image->add_subcommand("list", "List images on the service");
  list->callback([&ctx] {
    auto api = connect(ctx);
    ctx.render(transport::list_images(api));
  });

  auto* show = image->add_subcommand("show", "Show an image on the service");
  show->add_option("ID", args->id, "SHA-256")->required();
  show->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::show_image(api, args->id));
  });

  auto* remove = image->add_subcommand(
      "delete", "Delete images or manifests from the service (refused while an unfinished deployment uses one)");
  remove->add_option("ID", args->ids, "SHA-256 (as image list shows); several are deleted in turn")->required();
  remove->callback([&ctx, args] {
    auto api = connect(ctx);
    auto deleted = cli::Json::array();
    for (auto& id : args->ids) {
      try {
        deleted.push_back(transport::delete_image(api, id));
      } catch (const Error& e) {
        if (deleted.empty()) throw;
        throw Error(e.code(), fmt::format("{} (deleted before it: {})", e.what(), deleted.size()), e.hint());
      }
    }
    ctx.render(deleted);
  });

  auto* download = image->add_subcommand(
      "download", "Download an image via FILE.part (resumed with Range by the next run), renamed once its SHA-256 matches");
  download->add_option("ID", args->id, "SHA-256")->required();
  cli::add_output_file_option(download, args->out, "Where to write it", "-o,-O,--out")->required();
  cli::add_force_flag(download, args->force);
  download->callback([&ctx, args] {
    cli::check_overwrite(args->out, args->force);
    auto api = connect(ctx);
    ctx.render(transport::download_image(api, args->id, args->out));
  });
}

}  // namespace kiln::commands
