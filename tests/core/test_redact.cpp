// Credentials in pipe: commands and URLs are masked before they are logged or saved.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "clipper/core/redact.hpp"

using clipper::core::redact_secrets;

TEST(Redact, UrlUserInfoQuerySignaturesAndAssignments) {
  EXPECT_EQ(redact_secrets("pipe:curl -s https://alice:hunter2@host/x/{000..009}.tar"),
            "pipe:curl -s https://***@host/x/{000..009}.tar");
  EXPECT_EQ(redact_secrets("https://b.s3.amazonaws.com/s.tar?X-Amz-Credential=AKIA%2F1&"
                           "X-Amz-Date=20260101&X-Amz-Signature=abc123"),
            "https://b.s3.amazonaws.com/s.tar?X-Amz-Credential=***&X-Amz-Date=20260101&"
            "X-Amz-Signature=***");
  EXPECT_EQ(redact_secrets("https://acct.blob.core.windows.net/c/s.tar?sv=2022&sig=XyZ%3D"),
            "https://acct.blob.core.windows.net/c/s.tar?sv=2022&sig=***");
  EXPECT_EQ(redact_secrets("pipe:AWS_SECRET_ACCESS_KEY=abc AWS_REGION=eu aws s3 cp s3://b/s.tar -"),
            "pipe:AWS_SECRET_ACCESS_KEY=*** AWS_REGION=eu aws s3 cp s3://b/s.tar -");
  EXPECT_EQ(redact_secrets("pipe:tool --password hunter2 --token=t0k --verbose x.tar"),
            "pipe:tool --password *** --token=*** --verbose x.tar");
  EXPECT_EQ(redact_secrets("pipe:curl -H 'Authorization: Bearer eyJ.x.y' https://h/s.tar"),
            "pipe:curl -H 'Authorization: ***' https://h/s.tar");
  EXPECT_EQ(redact_secrets("pipe:curl -H \"X-Api-Key: k1\" https://h/s.tar"),
            "pipe:curl -H \"X-Api-Key: ***\" https://h/s.tar");
}

TEST(Redact, CredentialKeysButNotDataKeys) {
  EXPECT_EQ(redact_secrets("pipe:tool --api-key k1 --key k2 AZURE_STORAGE_KEY=k3 apiKey=k4 x.tar"),
            "pipe:tool --api-key *** --key *** AZURE_STORAGE_KEY=*** apiKey=*** x.tar");
  EXPECT_EQ(redact_secrets("pipe:gsutil -o Credentials:gs_service_key_file=f.json cat gs://b/s"),
            "pipe:gsutil -o Credentials:gs_service_key_file=f.json cat gs://b/s");
  EXPECT_EQ(redact_secrets("pipe:s3cmd --access_key=AK --secret_key=SK get s3://b/s -"),
            "pipe:s3cmd --access_key=*** --secret_key=*** get s3://b/s -");
}

TEST(Redact, EverythingElseIsKept) {
  for (const char* t : {"data/{00000..00099}.tar::other/{0,1}.tar",
                        "pipe:aws s3 cp s3://bucket/shard-{000..009}.tar -",
                        "  text_key: txt\n  label_key: cls\n  image_keys: [jpg, png]\n",
                        "http://host:8080/path/a.tar", "a=b c=d", "x://@host", "://", "",
                        "clipper train c.yaml --set data.text_key=json:caption label_key=cls",
                        "--csv-img-key filepath --csv-caption-key title --image_keys=jpg,png",
                        "design=1 keyboard=us monkey=3 signal=9"})
    EXPECT_EQ(redact_secrets(t), t);
}

// Issue 25: what still leaked (tried through `clipper config show --set data.train_shards=V`, so
// also as YAML writes V into config.yaml), and what must stay readable, in one table.
TEST(Redact, CredentialFlagsHeadersAndQuotedValues) {
  const std::vector<std::pair<std::string, std::string>> masked = {
      // curl / wget USER:PASSWORD options
      {"pipe:curl -u alice:hunter2 https://h/s.tar", "pipe:curl -u *** https://h/s.tar"},
      {"pipe:curl --user alice:hunter2 https://h/s.tar", "pipe:curl --user *** https://h/s.tar"},
      {"pipe:wget --user=alice:hunter2 -O - https://h/s.tar",
       "pipe:wget --user=*** -O - https://h/s.tar"},
      {"pipe:curl -u 'alice:hunter 2' https://h/s.tar", "pipe:curl -u *** https://h/s.tar"},
      {"pipe:curl --proxy-user bob:pw -x p:3128 https://h/s",
       "pipe:curl --proxy-user *** -x p:3128 https://h/s"},
      {"pipe:curl --cert c.pem:pw https://h/s", "pipe:curl --cert *** https://h/s"},
      {"pipe:curl --oauth2-bearer abc https://h/s", "pipe:curl --oauth2-bearer *** https://h/s"},
      {"pipe:wget --http-password=pw https://h/s", "pipe:wget --http-password=*** https://h/s"},
      {"pipe:aws s3 cp --sse-c-key abc s3://b/s -", "pipe:aws s3 cp --sse-c-key *** s3://b/s -"},
      // *TOKEN* and Authorization-style headers, with or without a space after the colon
      {"pipe:curl -H 'PRIVATE-TOKEN: glpat-x' https://h/s.tar",
       "pipe:curl -H 'PRIVATE-TOKEN: ***' https://h/s.tar"},
      {"pipe:curl -H 'Authorization:Bearer x' https://h/s.tar",
       "pipe:curl -H 'Authorization:***' https://h/s.tar"},
      {"pipe:curl --header \"Job-Token: abc\" https://h/s",
       "pipe:curl --header \"Job-Token: ***\" https://h/s"},
      {"pipe:wget --header='X-Vault-Token:abc' https://h/s",
       "pipe:wget --header='X-Vault-Token:***' https://h/s"},
      {"sent Bearer eyJ.x.y to h", "sent Bearer *** to h"},
      // quoted values, masked whole
      {"pipe:tool --password 'hunter2' x.tar", "pipe:tool --password *** x.tar"},
      {"pipe:HF_TOKEN='hf_abc' curl x", "pipe:HF_TOKEN=*** curl x"},
      {"pipe:HF_TOKEN=\"hf a b\" curl x", "pipe:HF_TOKEN=*** curl x"},
      // a quote that does not close on its line: the word after it (the quote is kept, so that a
      // masked config.yaml still reads back)
      {"pipe:tool --token='never closed", "pipe:tool --token='*** closed"},
      {"k: 'x --token='\nnext: 1", "k: 'x --token=***'\nnext: 1"},
      {"k: \"x --token=a\\\\\" # \\\"b\"", "k: \"x --token=***\" # \\\"b\""},
      // ... and as YAML quotes them: doubled in single quotes, escaped in double quotes
      {"train_shards: 'pipe:tool --password ''hunter2'' x.tar'",
       "train_shards: 'pipe:tool --password *** x.tar'"},
      {"train_shards: \"pipe:HF_TOKEN=\\\"hf_abc\\\" curl x\"",
       "train_shards: \"pipe:HF_TOKEN=*** curl x\""},
      {"train_shards: \"pipe:curl -H \\\"PRIVATE-TOKEN: glpat-x\\\" h\"",
       "train_shards: \"pipe:curl -H \\\"PRIVATE-TOKEN: ***\\\" h\""},
      // a LibTorch message and a sync command's output (logs/sync.log) go through it too
      {"open file failed, file path: https://u:p@h/x.pt",
       "open file failed, file path: https://***@h/x.pt"},
      {"fatal: could not read from https://h/?token=abc",
       "fatal: could not read from https://h/?token=***"},
  };
  for (const auto& [in, out] : masked) EXPECT_EQ(redact_secrets(in), out) << in;
  for (const char* kept : {"clipper train c.yaml --set data.text_key=json:caption",
                           "--csv-img-key filepath --csv-caption-key title",
                           "  label_key: cls\n  text_key: json:caption\n", "python -u train.py",
                           "pipe:curl -u alice https://h/s.tar",
                           "pipe:curl -H 'Content-Type: application/json' https://h/s",
                           "pipe:curl --user alice https://h/s", "tokenizer: clip",
                           "data.label_key=cls data.image_keys=jpg;png"})
    EXPECT_EQ(redact_secrets(kept), kept);
}
