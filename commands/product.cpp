// kiln product: create, list, show and delete products (each starts with Development, Field Test, Production).
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "commands/commands.hpp"
#include "commands/service_session.hpp"

namespace kiln::commands {
namespace {

struct ProductArgs {
  std::string name;
  std::string description;
};

}  // namespace

void add_product(CLI::App& app, cli::Context& ctx) {
  auto* product = app.add_subcommand("product", "Products on the service");
  product->require_subcommand(1);
  auto args = std::make_shared<ProductArgs>();

  auto* create = product->add_subcommand("create", "Create a product with its default device groups");
  create->add_option("NAME", args->name, "Product name")->required();
  create->add_option("-d,--description", args->description, "Free text");
  create->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::create_product(api, args->name, args->description));
  });

  auto* list = product->add_subcommand("list", "List products");
  list->callback([&ctx] {
    auto api = connect(ctx);
    ctx.render(transport::list_products(api));
  });

  auto* show = product->add_subcommand("show", "Show a product (by ID or name)");
  show->add_option("PRODUCT", args->name, "ID or name")->required();
  show->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::show_product(api, args->name));
  });

  auto* remove = product->add_subcommand("delete", "Delete a product that has no devices");
  remove->add_option("PRODUCT", args->name, "ID or name")->required();
  remove->callback([&ctx, args] {
    auto api = connect(ctx);
    ctx.render(transport::delete_product(api, args->name));
  });
}

}  // namespace kiln::commands
