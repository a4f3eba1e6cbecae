// Credentials in pipe: commands and URLs are masked before they are logged or saved.
#include <gtest/gtest.h>

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
