// BenchmarkReader: the samples of one split of a CLIP_benchmark folder, decoded in batches on
// worker threads with the project's image decoder (the loader's evaluation transform).
#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <exception>
#include <fstream>
#include <future>
#include <iterator>
#include <sstream>
#include <thread>

#include "clipper/core/error.hpp"
#include "clipper/data/tar_stream.hpp"
#include "clipper/eval/benchmark_dataset.hpp"
#include "clipper/eval/group_metrics.hpp"

namespace clipper::eval {
namespace {

// CLIP_benchmark's to_tuple(["webp", "png", "jpg", "jpeg"], ...): the first one present.
const std::string* find_image(const data::RawSample& s) {
  for (const char* ext : {"webp", "png", "jpg", "jpeg"})
    if (const auto* b = s.find(ext)) return b;
  return nullptr;
}

// webdataset's "cls" decoder: int(text).
std::int64_t parse_cls(const std::string& text, const std::string& what) {
  std::size_t b = 0, e = text.size();
  while (b < e && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
  const std::string t = text.substr(b, e - b);
  std::size_t used = 0;
  std::int64_t v = -1;
  try {
    v = std::stoll(t, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (t.empty() || used != t.size())
    throw core::InputError(what + ": the .cls entry '" + t.substr(0, 40) +
                           "' is not an integer class index");
  return v;
}

std::vector<std::string> caption_lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(line);
    start = end + 1;
  }
  return out;
}

// A sample of this rank, undecoded.
struct Pending {
  std::string what;  // "shard: key"
  std::string image;
  std::int64_t label = -1;
  at::Tensor multilabel;
  at::Tensor metadata;  // float [fields]: the .npy row of a GroupEval's task
  std::vector<std::string> captions;
};

// The .npy metadata row DataComp's evaluator `e` reads beside the .cls: at least its fields, the
// group fields integers >= 0 (WILDS's grouper refuses negative ones).
at::Tensor metadata_row(const data::RawSample& s, GroupEval e, const std::string& what) {
  const auto& fields = metadata_fields(e);
  const auto* entry = s.find("npy");
  if (!entry)
    throw core::InputError(what + " has no .npy metadata entry (" + to_string(e) +
                           " groups its samples by it)");
  auto row = parse_npy_vector(*entry, what);
  if (row.numel() < static_cast<std::int64_t>(fields.size())) {
    std::string names;
    for (const auto& f : fields) names += (names.empty() ? "" : ", ") + f;
    throw core::InputError(what + ": its .npy metadata has " + std::to_string(row.numel()) +
                           " entries, " + to_string(e) + " reads " + std::to_string(fields.size()) +
                           " (" + names + ")");
  }
  for (const auto& g : group_fields(e)) {
    const auto i = std::find(fields.begin(), fields.end(), g) - fields.begin();
    const double v = row[i].item<double>();
    if (v < 0 || v != static_cast<double>(static_cast<std::int64_t>(v))) {
      std::ostringstream value;
      value << v;
      throw core::InputError(what + ": its .npy metadata field '" + g + "' is " + value.str() +
                             ", not a group index (an integer >= 0)");
    }
  }
  return row;
}

}  // namespace

struct BenchmarkReader::Impl {
  const BenchmarkDataset& d;
  ReaderOptions o;
  std::vector<std::string> shards;
  std::vector<std::pair<std::string, std::int64_t>> files;  // a class-per-subfolder tree
  bool tree = false;
  std::size_t shard_index = 0, file_index = 0;
  std::unique_ptr<data::ShardReader> reader;
  std::int64_t seen = 0, delivered = 0;  // samples of the split read / of this rank delivered
  std::vector<std::unique_ptr<data::ImageProcessor>> processors;
  data::TransformSpec spec;

  Impl(const BenchmarkDataset& ds, const std::string& split, ReaderOptions opts)
      : d(ds), o(std::move(opts)), tree(ds.is_tree(split)) {
    if (tree)
      files = ds.tree_files(split);
    else
      shards = ds.shards(split);
    data::TransformSpec ts;
    ts.size = o.image_size;
    ts.train = false;
    ts.transparency = o.transparency;
    ts.resize_mode = o.resize_mode;
    ts.interpolation = o.interpolation;
    ts.naflex_patch = o.naflex_patch;
    ts.naflex_max_tokens = o.naflex_max_tokens;
    spec = ts;
    for (int i = 0; i < std::max(1, o.threads); ++i)
      processors.push_back(std::make_unique<data::ImageProcessor>(ts, o.max_image_pixels));
  }

  // A tree's next file as a sample: its bytes under its extension and its class as "cls".
  bool next_file(data::RawSample& s) {
    if (file_index == files.size()) return false;
    const auto& [path, label] = files[file_index++];
    std::ifstream in(path, std::ios::binary);
    if (!in) throw core::InputError("cannot read image '" + path + "'");
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    s.key = path;
    s.files = {{"jpg", std::move(bytes)}, {"cls", std::to_string(label)}};
    return true;
  }

  // The next raw sample of the split; false at its end.
  bool next_raw(data::RawSample& s) {
    if (tree) return next_file(s);
    while (true) {
      if (!reader) {
        if (shard_index == shards.size()) return false;
        reader = std::make_unique<data::ShardReader>(shards[shard_index++]);
      }
      if (reader->next(s)) return true;
      if (reader->status() != data::ShardStatus::ok)
        throw core::InputError("shard '" + reader->url() + "' is " +
                               data::to_string(reader->status()) + ": " + reader->error());
      reader.reset();
    }
  }

  Pending take(const data::RawSample& s) const {
    Pending p;
    p.what =
        tree ? "image '" + s.key + "'" : "shard '" + reader->url() + "' sample '" + s.key + "'";
    const auto* img = find_image(s);
    if (!img) throw core::InputError(p.what + " has no .webp, .png, .jpg or .jpeg image");
    p.image = *img;
    const char* ext = d.kind == DatasetKind::retrieval    ? "txt"
                      : d.kind == DatasetKind::multilabel ? "npy"
                                                          : "cls";
    const auto* entry = s.find(ext);
    if (!entry)
      throw core::InputError(p.what + " has no ." + ext + " entry (the dataset is " +
                             to_string(d.kind) + ")");
    const auto C = static_cast<std::int64_t>(d.classnames.size());
    if (d.kind == DatasetKind::retrieval) {
      p.captions = caption_lines(*entry);
    } else if (d.kind == DatasetKind::multilabel) {
      p.multilabel = parse_npy_vector(*entry, p.what);
      if (p.multilabel.numel() != C)
        throw core::InputError(p.what + ": its .npy label vector has " +
                               std::to_string(p.multilabel.numel()) + " entries, the dataset " +
                               std::to_string(C) + " class names");
    } else {
      p.label = parse_cls(*entry, p.what);
      if (!metadata_fields(d.group_eval).empty())
        p.metadata = metadata_row(s, d.group_eval, p.what);
      if (p.label < 0 || p.label >= C)
        throw core::InputError(p.what + ": class " + std::to_string(p.label) + " is outside 0.." +
                               std::to_string(C - 1) + " (classnames.txt has " + std::to_string(C) +
                               " names)");
    }
    return p;
  }

  void decode(const std::vector<Pending>& batch, at::Tensor& images, at::Tensor& grids) {
    const int S = o.image_size;
    const auto n = static_cast<std::int64_t>(batch.size());
    if (spec.naflex()) {
      images = at::empty(
          {n, spec.naflex_max_tokens, std::int64_t{spec.naflex_patch} * spec.naflex_patch * 3},
          at::kByte);
      grids = at::empty({n, 2}, at::kLong);
    } else {
      images = at::empty({n, S, S, 3}, at::kByte);
    }
    auto* base = images.data_ptr<std::uint8_t>();
    const auto stride = static_cast<std::int64_t>(data::output_bytes(spec));
    const int T = static_cast<int>(std::min<std::int64_t>(processors.size(), n));
    std::vector<std::string> errors(T);
    auto work = [&](int t) {
      for (std::int64_t i = t; i < n; i += T) {
        std::string why;
        data::PatchGrid g;
        const auto err = processors[t]->process(batch[i].image, 0, base + i * stride, &why, &g);
        if (grids.defined()) {
          grids.data_ptr<std::int64_t>()[2 * i] = g.rows;
          grids.data_ptr<std::int64_t>()[2 * i + 1] = g.cols;
        }
        if (err != data::ImageError::none) {
          errors[t] = batch[i].what + ": the image cannot be decoded: " + why;
          return;
        }
      }
    };
    std::vector<std::thread> threads;
    for (int t = 1; t < T; ++t) threads.emplace_back(work, t);
    work(0);
    for (auto& th : threads) th.join();
    for (const auto& e : errors)
      if (!e.empty()) throw core::InputError(e);
  }

  // This rank's next batch, read and decoded; nullopt at the end of the split.
  std::optional<BenchmarkBatch> produce() {
    std::vector<Pending> batch;
    data::RawSample s;
    while (static_cast<std::int64_t>(batch.size()) < o.batch_size && next_raw(s))
      if (seen++ % o.world_size == o.rank) batch.push_back(take(s));
    if (batch.empty()) return std::nullopt;
    BenchmarkBatch b;
    decode(batch, b.images, b.grids);
    for (auto& p : batch) {
      b.keys.push_back(p.what);
      if (d.kind == DatasetKind::retrieval) b.captions.push_back(std::move(p.captions));
    }
    const auto n = static_cast<std::int64_t>(batch.size());
    if (d.kind == DatasetKind::classification) {
      b.labels = at::empty({n}, at::kLong);
      auto labels = b.labels.accessor<std::int64_t, 1>();
      for (std::int64_t i = 0; i < n; ++i) labels[i] = batch[i].label;
      if (batch[0].metadata.defined()) {
        const auto F = static_cast<std::int64_t>(metadata_fields(d.group_eval).size());
        std::vector<at::Tensor> rows;
        for (const auto& p : batch) rows.push_back(p.metadata.narrow(0, 0, F));
        b.metadata = at::stack(rows);
      }
    } else if (d.kind == DatasetKind::multilabel) {
      std::vector<at::Tensor> rows;
      for (const auto& p : batch) rows.push_back(p.multilabel);
      b.multilabels = at::stack(rows);
    }
    return b;
  }

  // The next batch. With o.overlap the one after it is read and decoded on another thread while
  // the caller encodes this one (the same batches in the same order; a reading error is thrown
  // by the call that asks for the batch it is in).
  std::optional<BenchmarkBatch> next() {
    auto b = ahead.valid() ? ahead.get() : produce();
    if (b && o.overlap) ahead = std::async(std::launch::async, [this] { return produce(); });
    if (b) delivered += b->images.size(0);
    return b;
  }

  // Declared last: destroyed first, waiting for a batch still being decoded.
  std::future<std::optional<BenchmarkBatch>> ahead;
};

BenchmarkReader::BenchmarkReader(const BenchmarkDataset& dataset, const std::string& split,
                                 ReaderOptions o)
    : impl_(std::make_unique<Impl>(dataset, split, std::move(o))) {}
BenchmarkReader::~BenchmarkReader() = default;
std::optional<BenchmarkBatch> BenchmarkReader::next() {
  return impl_->next();
}
std::int64_t BenchmarkReader::samples() const {
  return impl_->delivered;
}

}  // namespace clipper::eval
