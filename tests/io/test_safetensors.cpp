// Our safetensors reader and writer: round trips of every dtype, and one clear error per kind of
// damage, naming the file and the tensor.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "clipper/core/atomic_file.hpp"
#include "clipper/core/error.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/io/safetensors_writer.hpp"
#include "test_util.hpp"

namespace cio = clipper::io;
using clipper::core::InputError;
using clipper::test::error_of;

namespace {

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A file with the given header JSON and `data` bytes after it.
std::string make_file(const clipper::test::TempDir& dir, const std::string& name,
                      const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  return dir.write(name, bytes + header + data);
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtypeInOrder) {
  clipper::test::TempDir dir;
  at::manual_seed(0);
  cio::TensorList in = {
      {"z.f32", at::randn({3, 4})},
      {"a.f16", at::randn({5}).to(at::kHalf)},
      {"m.bf16", at::randn({2, 2, 2}).to(at::kBFloat16)},
      {"f64", at::randn({7}, at::kDouble)},
      {"i64", at::randint(-1000, 1000, {4}, at::kLong)},
      {"i32", at::randint(-1000, 1000, {4}, at::kInt)},
      {"i16", at::randint(-1000, 1000, {4}, at::kShort)},
      {"i8", at::randint(-100, 100, {4}, at::kChar)},
      {"u8", at::randint(0, 255, {4}, at::kByte)},
      {"bool", at::randn({6}) > 0},
      {"scalar", at::scalar_tensor(2.5)},
      {"empty", at::zeros({0, 3})},
      {"strided", at::randn({4, 6}).t()},  // not contiguous
  };
  const auto path = dir.file("t.safetensors");
  cio::save_safetensors(path, in, {{"format", "pt"}, {"note", "hello"}});
  std::map<std::string, std::string> meta;
  const auto out = cio::load_safetensors(path, &meta);
  ASSERT_EQ(out.size(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].first, in[i].first);
    EXPECT_EQ(out[i].second.scalar_type(), in[i].second.scalar_type()) << in[i].first;
    EXPECT_EQ(out[i].second.sizes(), in[i].second.sizes()) << in[i].first;
    EXPECT_TRUE(at::equal(out[i].second, in[i].second)) << in[i].first;
  }
  EXPECT_EQ(meta.at("note"), "hello");
  EXPECT_EQ(meta.at("format"), "pt");
  // The data starts 8-byte aligned, and no temporary file is left behind.
  const auto bytes = read(path);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1u);
}

// The writer that streams an export: the header from names, dtypes and shapes, then tensor by
// tensor, gives save_safetensors' bytes; a tensor that is not its entry's is refused; a writer
// abandoned before commit() leaves neither the file nor its temporary.
TEST(Safetensors, AWriterStreamsTheBytesOfSaveAndLeavesNothingWhenAbandoned) {
  clipper::test::TempDir dir;
  const cio::TensorList tensors{{"a", at::randn({2, 3})}, {"b", at::arange(5, at::kLong)}};
  cio::save_safetensors(dir.file("whole.safetensors"), tensors, {{"k", "v"}});
  std::vector<cio::SafetensorsEntry> entries;
  for (const auto& [n, t] : tensors) entries.push_back({n, t.scalar_type(), t.sizes().vec()});
  {
    cio::SafetensorsWriter w(dir.file("streamed.safetensors"), entries, {{"k", "v"}});
    for (const auto& item : tensors) w.write(item.second);
    w.commit();
  }
  EXPECT_EQ(clipper::core::read_file(dir.file("whole.safetensors")),
            clipper::core::read_file(dir.file("streamed.safetensors")));
  {
    cio::SafetensorsWriter w(dir.file("abandoned.safetensors"), entries);
    const auto error = error_of([&] { w.write(at::zeros({3, 2})); });
    EXPECT_NE(error.find("'a' is not the dtype and shape"), std::string::npos) << error;
  }
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.exists();
  EXPECT_EQ(files, 2u);  // whole and streamed only
}

TEST(Safetensors, ReadsHandWrittenFileWithPaddingAndMetadata) {
  clipper::test::TempDir dir;
  const float v[2] = {1.5f, -2.0f};
  std::string data(reinterpret_cast<const char*>(v), 8);
  const auto path = make_file(
      dir, "h.safetensors",
      R"({"__metadata__":{"k":"v"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   )",
      data);
  const auto out = cio::load_safetensors(path);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, "x");
  EXPECT_FLOAT_EQ(out[0].second[1].item<float>(), -2.0f);
}

TEST(Safetensors, BadHeaderJson) {
  clipper::test::TempDir dir;
  const auto path = make_file(dir, "bad.safetensors", "{not json", "");
  const auto msg = error_of([&] { cio::load_safetensors(path); });
  EXPECT_TRUE(has(msg, path)) << msg;
  EXPECT_TRUE(has(msg, "bad header")) << msg;
}

TEST(Safetensors, HeaderLengthBeyondFile) {
  clipper::test::TempDir dir;
  std::string bytes(8, '\0');
  std::uint64_t n = 1000;
  std::memcpy(bytes.data(), &n, 8);
  const auto path = dir.write("short.safetensors", bytes + "{}");
  const auto msg = error_of([&] { cio::load_safetensors(path); });
  EXPECT_TRUE(has(msg, path) && has(msg, "truncated")) << msg;
  const auto tiny = dir.write("tiny.safetensors", "abc");
  EXPECT_TRUE(has(error_of([&] { cio::load_safetensors(tiny); }), "too short"));
  std::uint64_t huge = 1ull << 40;
  std::memcpy(bytes.data(), &huge, 8);
  const auto big = dir.write("big.safetensors", bytes + "{}");
  EXPECT_TRUE(has(error_of([&] { cio::load_safetensors(big); }), "bad header"));
}

TEST(Safetensors, TruncatedData) {
  clipper::test::TempDir dir;
  const auto path = dir.file("t.safetensors");
  cio::save_safetensors(path, {{"a", at::randn({4})}, {"b", at::randn({100})}});
  const auto bytes = read(path);
  const auto cut = dir.write("cut.safetensors", bytes.substr(0, bytes.size() - 10));
  const auto msg = error_of([&] { cio::load_safetensors(cut); });
  EXPECT_TRUE(has(msg, cut)) << msg;
  EXPECT_TRUE(has(msg, "truncated")) << msg;
  EXPECT_TRUE(has(msg, "tensor 'b'")) << msg;
}

TEST(Safetensors, UnknownDtype) {
  clipper::test::TempDir dir;
  const auto path = make_file(
      dir, "u.safetensors", R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", "ab");
  const auto msg = error_of([&] { cio::load_safetensors(path); });
  EXPECT_TRUE(has(msg, path) && has(msg, "tensor 'w'") && has(msg, "unknown dtype 'F8_E4M3'"))
      << msg;
  EXPECT_THROW(
      cio::save_safetensors(dir.file("c.safetensors"), {{"c", at::zeros({2}, at::kComplexFloat)}}),
      InputError);
}

TEST(Safetensors, ShapeSizeMismatch) {
  clipper::test::TempDir dir;
  const auto path = make_file(dir, "s.safetensors",
                              R"({"w":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}})",
                              std::string(16, '\0'));
  const auto msg = error_of([&] { cio::load_safetensors(path); });
  EXPECT_TRUE(has(msg, path) && has(msg, "tensor 'w'") && has(msg, "shape/size mismatch") &&
              has(msg, "24 bytes"))
      << msg;
}

TEST(Safetensors, GapsOverlapsAndTrailingBytes) {
  clipper::test::TempDir dir;
  const auto gap = make_file(
      dir, "g.safetensors",
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
      "abcdef");
  EXPECT_TRUE(has(error_of([&] { cio::load_safetensors(gap); }), "tensor 'b'"));
  const auto overlap = make_file(
      dir, "o.safetensors",
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
      "abcd");
  EXPECT_TRUE(has(error_of([&] { cio::load_safetensors(overlap); }), "without gaps or overlaps"));
  const auto trailing = make_file(
      dir, "t.safetensors", R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "abcd");
  EXPECT_TRUE(has(error_of([&] { cio::load_safetensors(trailing); }), "not described"));
  const auto bad_shape = make_file(
      dir, "n.safetensors", R"({"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", "ab");
  EXPECT_TRUE(has(error_of([&] { cio::load_safetensors(bad_shape); }), "bad header"));
}

TEST(Safetensors, WriterErrors) {
  clipper::test::TempDir dir;
  EXPECT_TRUE(has(error_of([&] {
                    cio::save_safetensors(dir.file("d.safetensors"),
                                          {{"x", at::zeros({1})}, {"x", at::zeros({1})}});
                  }),
                  "given twice"));
  EXPECT_TRUE(has(error_of([&] { cio::load_safetensors(dir.file("missing.safetensors")); }),
                  "missing.safetensors"));
}
