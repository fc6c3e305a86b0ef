" .flow files are Flow workflows (docs/editors.md).
autocmd BufRead,BufNewFile *.flow setfiletype flow
