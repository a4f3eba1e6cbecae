#pragma once
// Shard lists as WebDataset and OpenCLIP write them: brace patterns ("dir/{00000..00099}.tar",
// several braces per pattern), sources joined with "::" (each with an optional weight), local
// paths and "pipe:CMD" (the stdout of a shell command). Sizes come from sizes.json beside the
// shards or from the configured sample count.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace clipper::data {

// Expands every "{a..b}" range (zero padding kept: the width of `a`) and "{x,y,z}" alternative
// in `pattern`; throws InputError on an unbalanced or malformed brace, or when the pattern would
// expand to more than 1,000,000 names.
std::vector<std::string> expand_braces(const std::string& pattern);

struct Shard {
  std::string url;         // a local path or "pipe:CMD"
  int source = 0;          // index of the "::" source it came from
  std::int64_t size = -1;  // samples in the shard; -1: unknown
};

struct ShardList {
  std::vector<Shard> shards;
  std::vector<double> source_weights;  // one per source, normalised to sum 1
  // Sum of the known sizes; -1 when some shard size is unknown.
  std::int64_t total_size() const;
  bool sizes_known() const;
};

// "a/{0..9}.tar::b/{00..19}.tar": each "::" part is one source. `weights` (empty: equal) gives
// each source's sampling weight in resampled mode. Sizes are looked up in a sizes.json beside the
// shards (the folder of each local shard) when one exists; a shard missing from it stays unknown.
ShardList parse_shard_list(const std::string& spec, const std::vector<double>& weights = {});

// Stops a run before it starts when local shards of `spec` are missing: throws InputError naming
// `key` (the setting), the first missing file, how many of the list's local shards are missing
// and whether their folder exists. pipe: shards are not checked. Each folder is listed once, so a
// list of a million shards costs one directory listing per folder, not a million lookups.
void check_local_shards(const std::string& spec, const std::string& key);

// Reads "sizes.json" ({"name.tar": count, ...}) from `folder`; nullopt when there is none.
std::optional<std::vector<std::pair<std::string, std::int64_t>>> read_sizes_json(
    const std::string& folder);

}  // namespace clipper::data
