" Vim syntax of the .flow language; the same words and classes as editors/flow.tmLanguage.json.
if exists("b:current_syntax")
  finish
endif

syntax keyword flowKeyword after allow_failure at compensate concurrency cron defaults doc each every failure flow for let none on output retry schedule search step timeout when where workflow
syntax keyword flowConstant false null true
syntax keyword flowOperatorWord and in not or
syntax match flowComment "#.*$" contains=@Spell
syntax match flowDuration "\<\%([0-9]\+\%(ms\|s\|m\|h\|d\)\)\+\>"
syntax match flowNumber "\<[0-9]\+\%(\.[0-9]\+\)\=\%([eE][+-]\=[0-9]\+\)\=\>"
syntax match flowKey "\<[A-Za-z_][A-Za-z0-9_]*\ze[ \t]*:"
syntax match flowFunction "\<[A-Za-z_][A-Za-z0-9_]*\ze\s*("
syntax match flowRoot "\<\%(params\|steps\|secrets\|workflow\|self\|error\|item\)\ze\s*\."
syntax match flowStepHeader "\<step\s\+[A-Za-z_][A-Za-z0-9_]*" contains=flowKeyword
syntax region flowString start=+"+ skip=+\\.+ end=+"\|$+ contains=flowEscape,flowInterpolation
syntax region flowRawString start=+'+ end=+'\|$+
syntax match flowEscape "\\." contained
syntax region flowInterpolation matchgroup=flowInterpolationDelimiter start="\${" end="}" contained contains=flowRoot,flowFunction,flowNumber,flowDuration,flowConstant,flowOperatorWord

highlight default link flowKeyword Keyword
highlight default link flowConstant Constant
highlight default link flowOperatorWord Operator
highlight default link flowComment Comment
highlight default link flowDuration Number
highlight default link flowNumber Number
highlight default link flowKey Identifier
highlight default link flowFunction Function
highlight default link flowRoot Special
highlight default link flowString String
highlight default link flowRawString String
highlight default link flowEscape SpecialChar
highlight default link flowInterpolationDelimiter Delimiter

let b:current_syntax = "flow"
