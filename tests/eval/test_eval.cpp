// Evaluation inputs: the zero-shot class files (clipper's `classes:` and OpenCLIP's `classnames:`)
// and their errors.
#include <gtest/gtest.h>

#include <fstream>

#include "clipper/core/error.hpp"
#include "clipper/eval/eval.hpp"
#include "test_util.hpp"

using namespace clipper;

TEST(ZeroShotClasses, ReadsClassesOrClassnamesWithTemplates) {
  test::TempDir d;
  const auto a = (d.path() / "a.yaml").string();
  std::ofstream(a) << "classes: [cat, dog]\ntemplates: ['a photo of a {}.', '{}']\n";
  const auto ca = eval::load_zeroshot_classes(a);
  EXPECT_EQ(ca.classnames, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(ca.templates.size(), 2u);
  const auto b = (d.path() / "b.yaml").string();
  std::ofstream(b) << "classnames: [bird]\ntemplates: ['{}']\n";
  EXPECT_EQ(eval::load_zeroshot_classes(b).classnames, (std::vector<std::string>{"bird"}));
}

TEST(ZeroShotClasses, ErrorsNameTheFileAndTheKey) {
  test::TempDir d;
  const auto p = (d.path() / "c.yaml").string();
  std::ofstream(p) << "classes: [cat]\n";
  const auto e = test::error_of([&] { eval::load_zeroshot_classes(p); });
  EXPECT_NE(e.find("c.yaml"), std::string::npos) << e;
  EXPECT_NE(e.find("templates"), std::string::npos) << e;
  const auto missing = test::error_of([&] { eval::load_zeroshot_classes(p + ".nope"); });
  EXPECT_NE(missing.find(".nope"), std::string::npos) << missing;
}
