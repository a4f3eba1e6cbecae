// Hostile weights files: every malformed .pt pickle and safetensors header gets clipper's
// InputError naming the file (never a crash, an allocation the file cannot back, or LibTorch's
// own message), through the library and through `clipper embed`.
#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "clipper/core/error.hpp"
#include "clipper/io/openclip.hpp"
#include "clipper/io/safetensors.hpp"
#include "clipper/io/torch_checkpoint.hpp"
#include "test_util.hpp"

namespace cio = clipper::io;
using clipper::test::error_of;
using namespace std::string_literals;

namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Pickle protocol 2 pieces, as torch.save writes them.
std::string str(const std::string& s) {
  std::string out = "X";
  const auto n = static_cast<std::uint32_t>(s.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  return out + s;
}
std::string int32(std::int32_t v) {
  std::string out = "J";
  out.append(reinterpret_cast<const char*>(&v), 4);
  return out;
}
std::string long8(std::int64_t v) {  // LONG1 with 8 bytes
  std::string out = "\x8a\x08";
  out.append(reinterpret_cast<const char*>(&v), 8);
  return out;
}
std::string global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}
std::string tuple(const std::vector<std::string>& items) {
  std::string out = "(";
  for (const auto& i : items) out += i;
  return out + "t";
}
std::string storage(const std::string& key, const std::string& numel) {
  return tuple({str("storage"), global("torch", "FloatStorage"), str(key), str("cpu"), numel}) +
         "Q";
}
std::string rebuild(const std::string& storage_pid, std::int32_t offset,
                    const std::vector<std::string>& size, const std::vector<std::string>& stride) {
  return global("torch._utils", "_rebuild_tensor_v2") +
         tuple({storage_pid, int32(offset), tuple(size), tuple(stride), "\x89",
                global("collections", "OrderedDict") + ")R"}) +
         "R";
}
// {"w": tensor}: an OrderedDict as torch.save(model.state_dict()) writes it.
std::string state_dict(const std::string& tensor) {
  return std::string("\x80\x02") + global("collections", "OrderedDict") + ")R" + "(" + str("w") +
         tensor + "u.";
}

// A torch.save zip holding `pickle` as data.pkl and `data0` as data/0.
std::string write_pt(const clipper::test::TempDir& dir, const std::string& name,
                     const std::string& pickle, const std::string& data0 = std::string(24, '\0')) {
  const auto path = dir.file(name);
  caffe2::serialize::PyTorchStreamWriter w(path);
  w.writeRecord("data.pkl", pickle.data(), pickle.size());
  w.writeRecord("data/0", data0.data(), data0.size());
  w.writeEndOfFile();
  return path;
}

std::string safetensors_file(const clipper::test::TempDir& dir, const std::string& name,
                             const std::string& header, const std::string& data = "") {
  std::string bytes(8, '\0');
  const std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  return dir.write(name, bytes + header + data);
}

// The error of reading `path` as weights; it must name the file.
std::string weights_error(const std::string& path) {
  const auto msg = error_of([&] { cio::read_state_dict(path); });
  EXPECT_TRUE(has(msg, path)) << msg;
  return msg;
}

}  // namespace

TEST(HostilePickle, WellFormedStateDictStillLoads) {
  clipper::test::TempDir dir;
  std::string data(24, '\0');
  for (int i = 0; i < 6; ++i) {
    const float f = static_cast<float>(i);
    std::memcpy(data.data() + 4 * i, &f, 4);
  }
  const auto t = rebuild(storage("0", int32(6)), 1, {int32(2), int32(2)}, {int32(3), int32(1)});
  const auto path = write_pt(dir, "ok.pt", state_dict(t), data);
  const auto sd = cio::read_state_dict(path);
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd[0].first, "w");
  EXPECT_TRUE(at::equal(sd[0].second, at::tensor({1.f, 2.f, 4.f, 5.f}).reshape({2, 2})));
}

TEST(HostilePickle, StackAndMemoAreChecked) {
  clipper::test::TempDir dir;
  EXPECT_TRUE(has(weights_error(write_pt(dir, "memo.pt", "\x80\x02q\x00."s)), "empty stack"));
  EXPECT_TRUE(has(weights_error(write_pt(dir, "set.pt", "\x80\x02K\x01K\x02s.")), "SETITEM"));
  EXPECT_TRUE(has(weights_error(write_pt(dir, "get.pt", "\x80\x02h\x05.")), "memo entry 5"));
  EXPECT_TRUE(has(weights_error(write_pt(dir, "app.pt",
                                         "\x80\x02K\x01K\x02"
                                         "a.")),
                  "APPEND"));
  EXPECT_TRUE(has(weights_error(write_pt(dir, "pop.pt",
                                         "\x80\x02"
                                         "0.")),
                  "underflow"));
  EXPECT_TRUE(has(weights_error(write_pt(dir, "mark.pt", "\x80\x02K\x01t.")), "underflow"));
  EXPECT_TRUE(has(weights_error(write_pt(dir, "end.pt", "\x80\x02]")), "ends early"));
  EXPECT_TRUE(
      has(weights_error(write_pt(dir, "glob.pt", "\x80\x02K\x01K\x02\x93.")), "STACK_GLOBAL"));
}

TEST(HostilePickle, LongIntegersAreBounded) {
  clipper::test::TempDir dir;
  const std::string long1 = std::string("\x80\x02\x8a\x09") + std::string(9, '\x7f') + ".";
  EXPECT_TRUE(has(weights_error(write_pt(dir, "l1.pt", long1)), "exceeds 64 bits"));
  const std::string long4 = std::string("\x80\x02\x8b\xff\xff\xff\x7f") + ".";
  EXPECT_TRUE(has(weights_error(write_pt(dir, "l4.pt", long4)), "exceeds 64 bits"));
}

TEST(HostilePickle, DeepNestingIsFreedWithoutRecursion) {
  clipper::test::TempDir dir;
  const int depth = 200000;
  const std::string lists =
      "\x80\x02" + std::string(depth, ']') + std::string(depth - 1, 'a') + ".";
  EXPECT_TRUE(has(weights_error(write_pt(dir, "deep.pt", lists)), "not a state dict"));
  // A list that holds itself: freed too (LeakSanitizer would see a cycle of owners).
  EXPECT_TRUE(has(weights_error(write_pt(dir, "cycle.pt",
                                         "\x80\x02]q\x00h\x00"
                                         "a."s)),
                  "not a state dict"));
}

TEST(HostilePickle, StorageMustMatchItsRecordBeforeAllocation) {
  clipper::test::TempDir dir;
  const auto huge = rebuild(storage("0", long8(std::int64_t{1} << 62)), 0, {int32(1)}, {int32(1)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "huge.pt", state_dict(huge))), "a storage's size"));
  const auto big = rebuild(storage("0", long8(std::int64_t{1} << 40)), 0, {int32(1)}, {int32(1)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "big.pt", state_dict(big))),
                  "holds 24 bytes, expected 4398046511104"));
  const auto neg = rebuild(storage("0", int32(-6)), 0, {int32(1)}, {int32(1)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "neg.pt", state_dict(neg))), "negative"));
  const auto missing = rebuild(storage("7", int32(6)), 0, {int32(1)}, {int32(1)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "miss.pt", state_dict(missing))), "data/7"));
}

TEST(HostilePickle, ViewsStayInsideStorageAndFile) {
  clipper::test::TempDir dir;
  const auto s = storage("0", int32(6));
  const auto past = rebuild(s, 0, {int32(4), int32(3)}, {int32(3), int32(1)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "past.pt", state_dict(past))), "reaches element"));
  const auto off = rebuild(s, 6, {int32(1)}, {int32(1)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "off.pt", state_dict(off))), "reaches element"));
  const auto zero = rebuild(s, 0, {int32(1 << 20), int32(1 << 20)}, {int32(0), int32(0)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "zero.pt", state_dict(zero))), "more than the file"));
  const auto over = rebuild(s, 0, {long8(std::int64_t{1} << 40), long8(std::int64_t{1} << 40)},
                            {int32(0), int32(0)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "over.pt", state_dict(over))), "overflows"));
  const auto neg = rebuild(s, 0, {int32(2)}, {int32(-1)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "negs.pt", state_dict(neg))), "non-negative"));
  const auto dims = rebuild(s, 0, {int32(2)}, {int32(1), int32(1)});
  EXPECT_TRUE(has(weights_error(write_pt(dir, "dims.pt", state_dict(dims))), "differ"));
}

// Memo references cost two bytes each however large the value they repeat: a STACK_GLOBAL over a
// memoised string (issue 25: a 1.05 MB file took 2 GB), or one 'params' list repeated through
// every param group. The reader stops at its budget, naming the file and the limit.
TEST(HostilePickle, MemoBombsStopAtTheBudget) {
  clipper::test::TempDir dir;
  std::string globals = "\x80\x02" + str(std::string(64 << 10, 'A')) + "q\x00"s;
  for (int i = 0; i < 400; ++i) globals += "h\x00h\x00\x93"s + "0";  // 400 x 128 KiB kept
  const auto g = write_pt(dir, "globals.pt", globals + "}.");
  auto msg = weights_error(g);
  EXPECT_TRUE(has(msg, "builds more than") && has(msg, "bytes of values, the limit for a file of"))
      << msg;

  const int n = 3000;  // a list of 3,000 ints in 3,000 param groups: 72 MB from 12 KB
  std::string params = "\x80\x02}(" + str("optimizer") + "}(" + str("state") + "}" +
                       str("param_groups") + "](" + "}(" + str("params") + "](";
  for (int i = 0; i < n; ++i) params += "K\x01";
  params += "euq\x01"s;
  for (int i = 1; i < n; ++i) params += "h\x01";
  const auto p = write_pt(dir, "params.pt", params + "euu.");
  msg = error_of([&] { cio::read_torch_train_checkpoint(p); });
  EXPECT_TRUE(has(msg, p) && has(msg, "builds more than")) << msg;
  // The same with a few groups is an ordinary optimizer state.
  std::string few = "\x80\x02}(" + str("optimizer") + "}(" + str("state") + "}" +
                    str("param_groups") + "](" + "}(" + str("params") +
                    "](K\x01K\x02"
                    "euq\x01h\x01";
  const auto ok = cio::read_torch_train_checkpoint(write_pt(dir, "few.pt", few + "euu."));
  ASSERT_TRUE(ok.optimizer.has_value());
  ASSERT_EQ(ok.optimizer->groups.size(), 2u);
  EXPECT_EQ(ok.optimizer->groups[1].params, (std::vector<std::int64_t>{1, 2}));
}

TEST(HostilePickle, NotAZipOrNoPickle) {
  clipper::test::TempDir dir;
  const auto junk = dir.write("junk.pt", "PK\x03\x04 not really a zip");
  EXPECT_TRUE(has(weights_error(junk), "torch.save state dict"));
  const auto empty = dir.write("empty.pt", "");
  weights_error(empty);
}

TEST(HostileSafetensors, DeepShapeNestingIsRefusedBeforeParsing) {
  clipper::test::TempDir dir;
  const int depth = 300000;
  const auto path = safetensors_file(dir, "deep.safetensors",
                                     R"({"w":{"dtype":"F32","data_offsets":[0,0],"shape":)" +
                                         std::string(depth, '[') + std::string(depth, ']') + "}}");
  const auto msg = weights_error(path);
  EXPECT_TRUE(has(msg, "nested deeper")) << msg;
}

TEST(HostileSafetensors, ShapeProductsOverflowIntoOurError) {
  clipper::test::TempDir dir;
  for (const char* shape : {"[4611686018427387904,4]", "[4294967296,4294967296,4]"}) {
    const auto path = safetensors_file(
        dir, "o.safetensors",
        std::string(R"({"w":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,0]}})");
    const auto msg = weights_error(path);
    EXPECT_TRUE(has(msg, "64 bits")) << msg;
    EXPECT_FALSE(has(msg, "Storage size calculation")) << msg;
  }
  const auto big = safetensors_file(
      dir, "b.safetensors",
      R"({"w":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,0]}})");
  EXPECT_TRUE(has(weights_error(big), "64-bit integer"));
}

TEST(HostileSafetensors, NonIntegerShapesAndOffsetsAreRefused) {
  clipper::test::TempDir dir;
  for (const char* shape : {"[2.0]", "[\"2\"]", "[[2]]", "[true]", "[1e3]", "{}"}) {
    const auto path = safetensors_file(
        dir, "n.safetensors",
        std::string(R"({"w":{"dtype":"U8","shape":)") + shape + R"(,"data_offsets":[0,2]}})", "ab");
    EXPECT_TRUE(has(weights_error(path), "bad header")) << shape;
  }
  const auto off = safetensors_file(dir, "off.safetensors",
                                    R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,[2]]}})");
  EXPECT_TRUE(has(weights_error(off), "data_offsets must be"));
}

TEST(HostileSafetensors, TensorLargerThanFileOrLimit) {
  clipper::test::TempDir dir;
  const auto past = safetensors_file(
      dir, "p.safetensors", R"({"w":{"dtype":"F32","shape":[1048576],"data_offsets":[0,4194304]}})",
      "abcd");
  EXPECT_TRUE(has(weights_error(past), "truncated"));
  const auto ok = dir.file("ok.safetensors");
  cio::save_safetensors(ok, {{"w", at::zeros({4})}});
  const auto msg = error_of([&] { cio::load_safetensors(ok, nullptr, 15); });
  EXPECT_TRUE(has(msg, ok) && has(msg, "16 bytes exceed the limit of 15")) << msg;
  EXPECT_EQ(cio::load_safetensors(ok, nullptr, 16).size(), 1u);
  // The in-memory reader is the same reader.
  std::ifstream in(ok, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(at::equal(cio::load_safetensors_bytes(bytes, "mem")[0].second, at::zeros({4})));
  EXPECT_TRUE(
      has(error_of([&] { cio::load_safetensors_bytes(bytes.substr(0, 30), "mem"); }), "'mem'"));
}

// The issue's inputs, through the command line: exit 1 with clipper's own message.
TEST(HostileWeights, EmbedVerbRefusesEachCrashInput) {
  clipper::test::TempDir dir;
  const auto texts = dir.write("t.txt", "a photo\n");
  std::vector<std::string> files = {
      write_pt(dir, "memo.pt", "\x80\x02q\x00."s),
      write_pt(dir, "setitem.pt", "\x80\x02K\x01K\x02s."),
      write_pt(dir, "nested.pt",
               "\x80\x02" + std::string(200000, ']') + std::string(199999, 'a') + "."),
      safetensors_file(dir, "deep.safetensors",
                       R"({"w":{"dtype":"F32","data_offsets":[0,0],"shape":)" +
                           std::string(300000, '[') + std::string(300000, ']') + "}}"),
      safetensors_file(
          dir, "big1.safetensors",
          R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})"),
      safetensors_file(
          dir, "big2.safetensors",
          R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}})"),
  };
  for (const auto& f : files) {
    const auto r =
        clipper::test::run(clipper::test::clipper_bin() + " embed --model tiny-vit --weights " + f +
                           " --texts " + texts + " --out " + dir.file("x.npy"));
    EXPECT_EQ(r.exit_code, 1) << f << "\n" << r.output;
    EXPECT_TRUE(has(r.output, f)) << r.output;
    EXPECT_FALSE(has(r.output, "Exception raised from")) << r.output;
    EXPECT_FALSE(has(r.output, "frame #")) << r.output;
  }
}
