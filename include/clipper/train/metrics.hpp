#pragma once
// Metric sinks: one record per logged step, a list of (name, value) scalars.
// JsonlSink writes metrics.jsonl; TensorBoardSink writes TensorBoard event files.
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace clipper::train {

using Scalars = std::vector<std::pair<std::string, double>>;

class MetricSink {
 public:
  virtual ~MetricSink() = default;
  virtual void write(std::int64_t step, const Scalars& scalars) = 0;
  virtual void flush() = 0;
};

// Appends {"step": N, "<name>": value, ...} lines; non-finite values are written as null.
class JsonlSink : public MetricSink {
 public:
  explicit JsonlSink(const std::string& path);
  void write(std::int64_t step, const Scalars& scalars) override;
  void flush() override;

 private:
  std::string path_;
  std::ofstream out_;
};

// TensorBoard event files (TFRecord framing with masked CRC32C, Event/Summary protobufs written
// by hand: wall_time, step, file_version, and scalar summaries). See docs/metrics.md.
class TensorBoardSink : public MetricSink {
 public:
  // Creates <dir>/events.out.tfevents.<seconds>.<host>.<pid>.
  explicit TensorBoardSink(const std::string& dir);
  void write(std::int64_t step, const Scalars& scalars) override;
  void flush() override;
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);
  std::string path_;
  std::ofstream out_;
};

// CRC-32C (Castagnoli), as TFRecord framing uses.
std::uint32_t crc32c(const void* data, std::size_t size);

}  // namespace clipper::train
