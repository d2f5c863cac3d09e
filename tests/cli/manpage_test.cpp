// Man pages: the README's examples sorted into pages.
#include <doctest/doctest.h>

#include "cli/manpage.hpp"

using kiln::cli::readme_examples;

TEST_CASE("man: README examples go to the page of the noun they name, continuation lines kept") {
  std::string readme =
      "Text `kiln key generate` outside a block is not an example.\n"
      "```sh\n"
      "kiln key generate -o k.pem          # a comment naming image\n"
      "kiln --client-cert s.pem device import units.jsonl\n"
      "kiln deployment create --group G \\\n"
      "    --rollout 1%,100%\n"
      "kiln login --service https://h\n"
      "kiln-service init --dir ./svc\n"
      "kiln-board-emu --dir /tmp/b &\n"
      "bash scripts/demo.sh\n"
      "```\n"
      "```toml\n"
      "kiln image = 1\n"
      "```\n";
  auto examples = readme_examples(readme, {"key", "device", "deployment", "image"});
  CHECK(examples["kiln key"] == std::vector<std::string>{"kiln key generate -o k.pem          # a comment naming image"});
  CHECK(examples["kiln device"] == std::vector<std::string>{"kiln --client-cert s.pem device import units.jsonl"});
  CHECK(examples["kiln deployment"] ==
        std::vector<std::string>{"kiln deployment create --group G \\\n    --rollout 1%,100%"});
  CHECK(examples["kiln"] == std::vector<std::string>{"kiln login --service https://h"});
  CHECK(examples["kiln-service"] == std::vector<std::string>{"kiln-service init --dir ./svc"});
  CHECK(examples["kiln-board-emu"] == std::vector<std::string>{"kiln-board-emu --dir /tmp/b &"});
  CHECK(examples.count("kiln image") == 0);
}
