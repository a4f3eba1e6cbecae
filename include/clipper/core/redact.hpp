#pragma once
// Credentials out of text that clipper logs or saves (docs/data.md, "Secrets"). A `pipe:` command
// or a shard URL may carry them; what is replaced by "***":
//   - the user information of a URL: scheme://USER:PASSWORD@host -> scheme://***@host;
//   - the value of NAME=VALUE (a query parameter, a shell assignment, an --option=value) whose
//     NAME, split into words at '_', '-' and '.', has (in any case) a word containing token,
//     secret, password, passwd, pwd, credential, auth, session, apikey, accesskey or privatekey;
//     a word sig or signature...; or the word key alone, first, or after api, access, secret,
//     private, account, storage, sas, master, signing, encryption, subscription, client, shared,
//     ssh or x (e.g. X-Amz-Signature=..., AWS_SECRET_ACCESS_KEY=..., --api-key K, --key K).
//     Data keys such as text_key, label_key or --csv-img-key are not secrets;
//   - the value of an option --NAME VALUE with such a NAME (e.g. --password hunter2);
//   - an HTTP header "Authorization: ..." or "X-...-Token: ..." up to the closing quote.
// Everything else is kept, so that a redacted command still shows which bucket and shard it read.
#include <string>
#include <string_view>

namespace clipper::core {

std::string redact_secrets(std::string_view text);

// True when NAME looks like the name of a secret by the rule above.
bool secret_name(std::string_view name);

}  // namespace clipper::core
