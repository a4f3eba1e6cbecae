#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "test_util.hpp"

using namespace clipper::core;

TEST(AtomicFile, WritesAndReplacesWithoutLeftovers) {
  clipper::test::TempDir dir;
  const std::string p = dir.file("sub/state.json");
  write_file_atomic(p, "first");
  EXPECT_EQ(read_file(p), "first");
  write_file_atomic(p, std::string(1 << 20, 'x'));
  EXPECT_EQ(read_file(p).size(), 1u << 20);
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("sub"))) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);  // no temporary file left behind
}

TEST(AtomicFile, FailureLeavesOldContent) {
  clipper::test::TempDir dir;
  const std::string p = dir.file("keep.txt");
  write_file_atomic(p, "old");
  // The parent "folder" is a regular file: creating the temporary fails and nothing changes.
  EXPECT_THROW(write_file_atomic(dir.file("keep.txt/child"), "new"), std::exception);
  EXPECT_EQ(read_file(p), "old");
}

TEST(AtomicFile, ReadMissingNamesThePath) {
  try {
    read_file("/nonexistent/clipper/file.yaml");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/clipper/file.yaml"), std::string::npos);
  }
}

// Run folders and checkpoints may hold credentials: other users get no access, whatever the
// umask lets through; a stricter umask still wins.
TEST(AtomicFile, PrivateFoldersAreNotWorldReadable) {
  clipper::test::TempDir dir;
  auto mode = [](const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 0777;
  };
  const mode_t old = ::umask(022);
  make_private_dirs(dir.file("runs/r1/checkpoints"));
  EXPECT_EQ(mode(dir.file("runs")), 0750u);
  EXPECT_EQ(mode(dir.file("runs/r1/checkpoints")), 0750u);
  ::umask(077);
  make_private_dirs(dir.file("strict/x"));
  EXPECT_EQ(mode(dir.file("strict/x")), 0700u);
  ::umask(old);
  make_private_dirs(dir.file("runs/r1"));  // exists: fine
}
