#!/bin/sh
# Re-vendors the browser libraries the API serves from this folder (/static/vendor/), each
# as published on the npm registry (`npm pack`: the registry's own tarball) and checked
# against the sha256 below before it replaces the copy here. No build step, no CDN.
#
# - graphql-ws: the board page's subscription client.
# - react, react-dom, js-cookie, graphiql, @graphiql/plugin-explorer: exactly the files
#   strawberry's GraphiQL page names on unpkg.com (same versions, same paths). The API
#   points the page at these copies instead (services/api/edge.py, GRAPHIQL_ASSETS), and
#   the page's integrity attributes (sha384) hold for them unchanged.
#
# After a strawberry upgrade that names other versions, change the lines below and
# GRAPHIQL_ASSETS together, run `sh services/api/static/vendor/update.sh`, and put the new
# sha256 here. Needs npm and the registry; nothing else.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

unpack() { # package@version -> folder of the unpacked tarball
    dir="$work/$(printf %s "$1" | tr '/@' '__')"
    if [ ! -d "$dir" ]; then
        mkdir -p "$dir"
        tarball=$(cd "$work" && npm pack --silent "$1" | tail -n 1)
        tar -xzf "$work/$tarball" -C "$dir"
    fi
    printf %s "$dir/package"
}

# package@version            file in the package          name here                          sha256
while read -r spec file name sha; do
    src="$(unpack "$spec")/$file"
    got=$(sha256sum "$src" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        echo "$spec $file: sha256 $got, expected $sha" >&2
        exit 1
    fi
    cp "$src" "$here/$name"
    echo "$name  <- $spec/$file"
done <<'LIST'
graphql-ws@6.4.2               umd/graphql-ws.min.js        graphql-ws.min.js                  5f1e250bdea0a551d58272048281dbf5b2fb69faa120160bab49485c72b6f24d
graphql-ws@6.4.2               LICENSE.md                   graphql-ws.LICENSE.md              58737f97fe15c9aa68eb067f97a5488ceffca6835bfce511c6819c5156dca48e
react@18.2.0                   umd/react.production.min.js  react.production.min.js            4b4969fa4ef3594324da2c6d78ce8766fbbc2fd121fff395aedf997db0a99a06
react@18.2.0                   LICENSE                      react.LICENSE.md                  52412d7bc7ce4157ea628bbaacb8829e0a9cb3c58f57f99176126bc8cf2bfc85
react-dom@18.2.0               umd/react-dom.production.min.js react-dom.production.min.js     21758ed084cd0e37e735722ee4f3957ea960628a29dfa6c3ce1a1d47a2d6e4f7
react-dom@18.2.0               LICENSE                      react-dom.LICENSE.md              52412d7bc7ce4157ea628bbaacb8829e0a9cb3c58f57f99176126bc8cf2bfc85
js-cookie@3.0.5                dist/js.cookie.min.js        js.cookie.min.js                   582cc085dd8fea044917d1efde838e77e845262fd025bbfe0339f808607c81f6
js-cookie@3.0.5                LICENSE                      js-cookie.LICENSE.md              eff040f4184445a6d1f7f76d918101d631402436ff12256b924fb68e4df28a94
graphiql@3.8.3                 graphiql.min.js              graphiql.min.js                    22faab94067b695e5f7959619fbe686ebcc8955002a0c97d986bcbba4ad4bc2c
graphiql@3.8.3                 graphiql.min.css             graphiql.min.css                   b1868247f8e0502cd869e581f5f3cb55b334862e7f51b1d6cbace11059b9adc2
graphiql@3.8.3                 LICENSE                      graphiql.LICENSE.md               4b18fbe55c4e8f9169cb702be138f4d858a2dad920c39857204ffdc9c1c9fdc4
@graphiql/plugin-explorer@1.0.2 dist/index.umd.js           graphiql-plugin-explorer.umd.js    083e37e501d3e3920a60e627b82191af056009124dce82a332e8ac74db6ca38b
@graphiql/plugin-explorer@1.0.2 dist/style.css              graphiql-plugin-explorer.css       762850cb69873400d0ab1737c6158aee91f5c38195bc4a30ee02a3c5d5af4e01
LIST

# The explorer plugin's tarball carries no licence file: its licence is its repository's
# (graphql/graphiql, MIT, as its package.json says), and its bundle includes
# graphiql-explorer, whose own licence follows.
{
    cat "$(unpack graphiql@3.8.3)/LICENSE"
    printf '\n---\n\nThe bundle includes graphiql-explorer 0.9.0, under this licence:\n\n'
    cat "$(unpack graphiql-explorer@0.9.0)/LICENSE"
} >"$here/graphiql-plugin-explorer.LICENSE.md"
echo "graphiql-plugin-explorer.LICENSE.md  <- graphiql@3.8.3/LICENSE + graphiql-explorer@0.9.0/LICENSE"
